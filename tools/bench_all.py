"""``posswarm-bench all``: rerun every benchmark at its stated size and write its figures into docs/benchmarks.md.

Each benchmark runs as its own ``posswarm-bench NAME ... --json`` process, one after the other; its
JSON becomes a generated block of docs/benchmarks.md (tools/bench_docs.py), written as soon as it
ends and stamped with the commit, whether the tree was dirty, the date, the machine and its load.
A benchmark that fails gets a block saying so, with its last error line; the others still run.
``--quick`` runs every one at a tiny size (a smoke test of the whole chain, not figures to quote);
the netsim ones (distribution, release) need root for their network namespaces.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from posswarm.errors import PosswarmError
from tools import bench_delta, bench_distribution, bench_docs
from tools.lab import bin_path

PROG = "posswarm-bench all"
ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
MAX_OUTPUT = 64 << 20  # a benchmark's JSON is kilobytes; anything near this is not one
RUN_TIMEOUT_S = 4 * 3600


@dataclass(frozen=True)
class Run:
    """One block of the generated region: which benchmark, with which options at full and at quick size."""

    name: str
    benchmark: str
    full: tuple[str, ...]
    quick: tuple[str, ...]
    about: str


RUNS = (
    Run("distribution", "distribution",
        ("--devices", "4,12", "--image-mb", "48", "--wan-mbit", "40", "--lan-mbit", "400"),
        ("--devices", "2", "--image-mb", "16"),
        "One store on the emulated network, a real ext4 image; posswarm against Varnish in the store, an HTTP "
        "store cache and HTTP from central (issue 15's table)."),
    Run("distribution-random", "distribution",
        ("--devices", "4,12", "--image-mb", "48", "--wan-mbit", "40", "--lan-mbit", "400", "--payload", "random"),
        ("--devices", "2", "--image-mb", "8", "--payload", "random", "--systems", "posswarm,varnish"),
        "The same with random bytes: nothing compresses, the worst case."),
    Run("delta", "delta", ("--image-mb", "420", "--sweep"), ("--image-mb", "24", "--changes", "upgrade", "--no-random"),
        "Bytes on the wire for a real ext4 image and its updates, posswarm against casync (issue 14)."),
    Run("release", "release", (), ("--stores", "2", "--image-mb", "8", "--delta-image-mb", "24"),
        "Delta update, cross-store seeding and a WAN cap on the emulated network (real image)."),
    Run("control-plane", "control-plane", ("--stores", "1000"),
        ("--stores", "20", "--releases", "1", "--poll-s", "1", "--announce-s", "1", "--seconds", "2"),
        "Central's CPU and memory with simulated store caches polling the catalog and announcing."),
    Run("tracker", "tracker", (), ("--skip-opentracker", "--duration", "1", "--pool", "1000", "--peers", "5000"),
        "Tracker announces/s and latency against opentracker, and memory per peer."),
    Run("tracker-production", "tracker", ("--production", "--attack"),
        ("--production", "--duration", "1", "--pool", "1000", "--peers", "5000"),
        "The tracker as central runs it (private passkeys, store-first, a source address per store), then again "
        "under a slowloris and connection flood (issue 13's headline row)."),
    Run("tracker-tls", "tracker", ("--certificates",),
        ("--certificates", "--nodes", "20", "--connections", "4", "--duration", "1", "--idle", "200"),
        "Enrolled nodes announcing over mutual TLS: a new handshake each announce against kept connections, the "
        "tracker's memory per idle kept connection, and the fleet's cores and GiB from them (issue 12)."),
    Run("sales", "sales", ("--devices", "4", "--sales", "2000", "--rate", "10"), ("--devices", "2", "--sales", "40"),
        "Sales from tills to central, no faults: lost, duplicated, latency."),
    Run("sales-faults", "sales",
        ("--devices", "3", "--sales", "1200", "--rate", "25", "--drop", "0.3", "--dup", "0.1", "--reorder", "0.1",
         "--kill-every", "2", "--cache-outage", "8"),
        ("--devices", "2", "--sales", "40", "--drop", "0.3", "--dup", "0.1"),
        "The same under dropped, duplicated and reordered frames, SIGKILLs and a cache outage."),
    Run("security", "security", (), ("--scale", "0.05"),
        "What the trust chain costs: CPU per TLS handshake, per MB of TLS records, per signed sales batch, per SKU "
        "entry and per node certificate checked, on posswarm's own code paths (issue 12)."),
    Run("sales-ingest", "sales-ingest",
        ("--db", "postgresql", "--caches", "1000", "--tills", "4", "--sales-per-till", "25", "--batch", "100",
         "--seed", "17"),
        ("--db", "postgresql", "--caches", "20", "--tills", "1", "--sales-per-till", "10", "--batch", "5",
         "--no-backlog"),
        "A thousand store caches forwarding at once into central's PostgreSQL, then one 40-till store's day "
        "(issue 17)."),
    Run("sales-ingest-steady", "sales-ingest",
        ("--db", "postgresql", "--caches", "1000", "--rate", "10000", "--seed", "17", "--no-backlog"),
        ("--db", "postgresql", "--caches", "20", "--tills", "1", "--sales-per-till", "10", "--rate", "100",
         "--no-backlog"),
        "The same caches forwarding sales as they are made, 10,000 a second between them: the batch latency a "
        "store lives (issue 17's p99 < 1 s)."),
    Run("sku", "sku", ("--skus", "100000", "--devices", "4"), ("--skus", "2000", "--devices", "2", "--changes", "3"),
        "The SKU catalog to a fresh till; one price change to every till."),
    Run("sku-1m", "sku", ("--skus", "1000000", "--devices", "2", "--changes", "3"),
        ("--skus", "3000", "--devices", "2", "--changes", "1"),
        "A million SKUs to a fresh till joining a store that holds them (issue 17's < 20 s)."),
    Run("sku-stores", "sku", ("--stores", "100", "--tills-per-store", "2", "--changes", "20", "--seed", "17"),
        ("--stores", "2", "--tills-per-store", "1", "--changes", "2", "--skus", "50"),
        "A price change imported at central, timed until every till of 100 stores (two tills each) shows it; the "
        "stores' nodes share store processes, one a core (issue 17)."),
)
NAMES = [r.name for r in RUNS]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks the chain, gives no figures to quote")
    p.add_argument("--only", help=f"comma-separated, from {', '.join(NAMES)} (default: all; other blocks stay)")
    p.add_argument("--doc", type=Path, default=DOC, help="the file to write (default docs/benchmarks.md)")
    return p


def _git(*argv: str) -> str:
    done = subprocess.run(["git", *argv], capture_output=True, text=True, cwd=ROOT)
    return done.stdout.strip() if done.returncode == 0 else ""


def stamp_of_tree() -> tuple[str, bool]:
    """(commit, dirty): dirty = changes besides the generated doc and its plots, which each run rewrites."""
    commit = _git("rev-parse", "HEAD") or "unknown (not a git checkout)"
    changes = _git("status", "--porcelain", "--", ".", ":(exclude)docs/benchmarks.md", ":(exclude)docs/bench-*.png")
    return commit, bool(changes)


def machine() -> str:
    """CPUs, memory, kernel, Python and libtorrent, in one line."""
    model, memory = "", 0
    try:
        model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), "")
        memory = next(int(line.split()[1]) << 10 for line in Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemTotal:"))
    except (OSError, StopIteration, ValueError):
        pass
    try:
        import libtorrent

        torrent = f", libtorrent {libtorrent.__version__}"
    except ImportError:
        torrent = ""
    return (f"{os.cpu_count()} CPUs ({model or platform.machine()}), {memory / 2**30:.0f} GiB, "
            f"Linux {platform.release()}, Python {platform.python_version()}{torrent}")


def run_one(run: Run, quick: bool) -> tuple[list[str], object, str, float]:
    """(the command, its JSON or None, its last error line, seconds)."""
    argv = [bin_path("posswarm-bench"), run.benchmark, *(run.quick if quick else run.full), "--json"]
    started = time.monotonic()
    try:
        done = subprocess.run(argv, capture_output=True, cwd=ROOT, timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return argv, None, f"no result in {RUN_TIMEOUT_S} s", time.monotonic() - started
    seconds = time.monotonic() - started
    sys.stderr.buffer.write(done.stderr[-4096:])
    errors = [line for line in done.stderr.decode(errors="replace").splitlines() if line.strip()]
    if done.returncode != 0:
        return argv, None, (errors or [f"exit {done.returncode}"])[-1][:300], seconds
    if len(done.stdout) > MAX_OUTPUT:
        return argv, None, f"{len(done.stdout)} bytes of output, more than {MAX_OUTPUT}", seconds
    try:
        return argv, json.loads(done.stdout), "", seconds
    except ValueError as exc:
        return argv, None, f"its output is not JSON ({exc})", seconds


def render(run: Run, quick: bool, argv: list[str], result, error: str, seconds: float, stamp: str) -> str:
    """The block of one benchmark: its command and stamp, then its table (or why there is none)."""
    shown = " ".join(["posswarm-bench", *argv[1:]])
    head = [f"### {run.name}", "", run.about, "", f"`{shown}`", "",
            f"{stamp}; took {seconds:,.0f} s." + (" **Quick size: a smoke test, not figures.**" if quick else "")]
    if result is None:
        return "\n".join(head + ["", f"**Failed**: {error}"])
    if run.benchmark == "distribution":
        args = bench_distribution._parser().parse_args(list((run.quick if quick else run.full)))
        table = bench_distribution.table(result, args)
    elif run.benchmark == "delta":
        table = bench_delta.table(result)
    else:
        table = bench_docs.markdown(result)
    return "\n".join(head + ["", table])


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    wanted = NAMES if not args.only else [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in NAMES]
    if unknown or not wanted:
        print(f"{PROG}: --only {args.only!r}: choose from {', '.join(NAMES)}", file=sys.stderr)
        return 2
    if not args.doc.is_file():
        print(f"{PROG}: {args.doc}: no such file (give --doc the benchmarks document to write)", file=sys.stderr)
        return 2
    commit, dirty = stamp_of_tree()
    where = machine()
    failed = []
    for run in (r for r in RUNS if r.name in wanted):
        load = "/".join(f"{x:.1f}" for x in os.getloadavg())
        when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        stamp = (f"Commit `{commit}` ({'dirty' if dirty else 'clean'}), {when}, {where}, "
                 f"load average {load} at the start")
        print(f"{PROG}: {run.name} ...", file=sys.stderr, flush=True)
        command, result, error, seconds = run_one(run, args.quick)
        if result is None:
            failed.append(f"{run.name}: {error}")
        try:
            text = render(run, args.quick, command, result, error, seconds, stamp)
        except (KeyError, TypeError, ValueError, PosswarmError) as exc:  # a benchmark's JSON of another shape
            failed.append(f"{run.name}: its JSON did not render ({exc!r})")
            text = render(run, args.quick, command, None, f"its JSON did not render ({exc!r})", seconds, stamp)
        args.doc.write_text(bench_docs.update(args.doc.read_text(), run.name, text, NAMES))
        print(f"{PROG}: {run.name} {'FAILED' if result is None else 'done'} in {seconds:.0f} s", file=sys.stderr)
    print(f"{PROG}: wrote {args.doc} ({len(wanted) - len(failed)} of {len(wanted)} benchmarks)"
          + "".join(f"\n  failed: {f}" for f in failed))
    return 1 if failed else 0
