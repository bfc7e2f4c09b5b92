"""``posswarm-bench delta``: bytes on the wire for a real image and its updates, posswarm against casync.

One run builds a realistic ext4 image (tools/images.py) and its next versions (a package-upgrade-style
update, a one-package change, many scattered edits), publishes them with posswarm and stores them with
casync (Debian's ``casync``, default chunk sizes, zstd chunk store) in the same run, and reports:

- full image: the bytes a node holding nothing fetches. posswarm: the stored (compressed) chunk files of
  the release's torrent; casync: the ``.cacnk`` files of its store.
- update: what a node holding the previous version lacks. posswarm: chunk files of the new release
  whose BLAKE3 the old one does not list; casync: the chunk files the new index adds to the old store.
- the ratio posswarm / casync, the time to publish against an fsync'd ``dd`` of the same image, and
  how fast one core decodes and verifies the chunks a device receives.

It also sweeps FastCDC sizes and zstd levels on the same images (``--sweep``) and checks random bytes,
the incompressible worst case. ``--write-docs`` puts the tables into docs/benchmarks.md, stamped with
the commit. Needs e2fsprogs, casync and zstd (``apt-get install e2fsprogs casync zstd``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import blake3
from pyfastcdc import FastCDC

from posswarm import logs
from posswarm.chunks import CHUNK_AVG, CHUNK_MAX, CHUNK_MIN, ZSTD_LEVEL
from posswarm.errors import PosswarmError
from posswarm.keys import generate_keypair, load_private_key
from seeder.publish import publish_release
from tools import images
from tools.delta_measures import (
    MiB,
    casync_contents,
    casync_store,
    dd_seconds,
    decode_rate,
    random_pair,
    sweep,
    torrent_cost,
    wire_of_release,
    zstd_size,
)

PROG = "posswarm-bench delta"
TOOLS = {"casync": "casync", "mkfs.ext4": "e2fsprogs", "debugfs": "e2fsprogs", "zstd": "zstd"}
TARGET_FULL = 1.05  # posswarm / casync, full image
TARGET_UPDATE = 1.0  # posswarm / casync, update
TARGET_PUBLISH = 0.90  # of the fsync'd dd rate
TARGET_DECODE_MBS = 500  # MB/s of content per core
# (min, avg, max) of the sweep: the old default, casync's default, and around them.
DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
BEGIN, END = "<!-- bench-delta:begin -->", "<!-- bench-delta:end -->"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image-mb", type=int, default=420, help="image size in MiB (default 420)")
    p.add_argument("--changes", default=",".join(images.CHANGES),
                   help=f"updates to measure, comma-separated from {', '.join(images.CHANGES)} (default all)")
    p.add_argument("--sweep", action="store_true", help="also sweep FastCDC sizes and zstd levels on the images")
    p.add_argument("--no-random", action="store_true", help="skip the random-bytes (incompressible) pair")
    p.add_argument("--workdir", type=Path, help="where images and stores go (default: a temp dir, removed after)")
    p.add_argument("--write-docs", action="store_true", help="write the tables into docs/benchmarks.md")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    return p


def bench(args, workdir: Path) -> dict:
    kinds = [k for k in args.changes.split(",") if k]
    for k in kinds:
        if k not in images.CHANGES:
            raise PosswarmError(f"--changes: {k!r} is not one of {', '.join(images.CHANGES)}")
    size = args.image_mb * MiB
    commit = _commit()  # the code that runs, not whatever HEAD is when a run of many minutes ends
    started = time.monotonic()
    images.gather(workdir / "tree-v1", int(size * images.FILE_SHARE))
    v1 = workdir / "v1.img"
    images.build_image(workdir / "tree-v1", v1, size)
    updates, changes = {}, {}
    for kind in kinds:
        changes[kind] = images.next_tree(workdir / "tree-v1", workdir / f"tree-{kind}", kind)
        updates[kind] = workdir / f"{kind}.img"
        images.build_image(workdir / f"tree-{kind}", updates[kind], size)
    built_s = time.monotonic() - started
    key = load_private_key(generate_keypair(workdir / "keys")[0])
    releases = workdir / "releases"
    result = {"image_bytes": size, "file_bytes": sum(p.stat().st_size for p in (workdir / "tree-v1").rglob("*")
                                                     if p.is_file()),
              "build_seconds": round(built_s, 1), "chunk_sizes": [CHUNK_MIN, CHUNK_AVG, CHUNK_MAX],
              "zstd_level": ZSTD_LEVEL, "commit": commit, "rows": []}
    dd = dd_seconds(v1, workdir)
    os.sync()  # publish's one syncfs would otherwise also write back dd's and the images' leftovers
    cpu = os.times()  # all threads of this process: the publish's CPU, whatever the machine's load
    first = publish_release(v1, name="pos-os", version="1", private_key=key, out=releases)
    used = os.times()
    result["publish_cpu_s_per_gb"] = round((used.user + used.system - cpu.user - cpu.system) / (size / 1e9), 2)
    # The kernel's share apart: on ext4 without a journal, making files next to ones deleted in the last
    # minutes costs several times more (ext4's recently_deleted() scan), whatever publish does.
    result["publish_kernel_cpu_s_per_gb"] = round((used.system - cpu.system) / (size / 1e9), 2)
    casync_v1, casync_s = casync_store(v1, workdir / "v1.caibx", workdir / "cstore-v1")
    full = wire_of_release(first.path)
    result["dd_mbs"] = round(size / dd / 1e6, 1)
    result["publish_mbs"] = round(size / first.seconds / 1e6, 1)
    result["casync_make_mbs"] = round(size / casync_s / 1e6, 1)
    result["decode_mbs"] = round(decode_rate(first.path), 1)
    result["zstd_image"] = zstd_size(v1)
    result["rows"].append({"what": "full image", "content": size, "posswarm": full["stored"],
                           "casync": sum(p.stat().st_size for p in casync_v1),
                           "posswarm_chunks": full["chunks"], "casync_chunks": len(casync_v1),
                           "posswarm_content": full["content"], "casync_content": _content(workdir / "v1.caibx", casync_v1),
                           "posswarm_metadata": full["metadata"],
                           "casync_metadata": (workdir / "v1.caibx").stat().st_size})
    for n, kind in enumerate(kinds, start=2):
        pub = publish_release(updates[kind], name="pos-os", version=str(n), private_key=key, out=releases)
        wire = wire_of_release(pub.path, first.path)
        store = workdir / f"cstore-{kind}"
        shutil.copytree(workdir / "cstore-v1", store, copy_function=os.link)
        after, _ = casync_store(updates[kind], workdir / f"{kind}.caibx", store)
        held = {p.relative_to(workdir / "cstore-v1") for p in casync_v1}
        added = [p for p in after if p.relative_to(store) not in held]
        c = changes[kind]
        result["rows"].append({"what": f"update: {kind}", "content": c.bytes_changed, "files_changed": c.files_changed,
                               "files_removed": c.files_removed, "files_added": c.files_added,
                               "posswarm": wire["stored"], "casync": sum(p.stat().st_size for p in added),
                               "posswarm_chunks": wire["chunks"], "casync_chunks": len(added),
                               "posswarm_content": wire["content"],
                               "casync_content": _content(workdir / f"{kind}.caibx", added),
                               "posswarm_metadata": wire["metadata"],
                               "casync_metadata": (workdir / f"{kind}.caibx").stat().st_size,
                               "publish_seconds": round(pub.seconds, 2)})
        shutil.rmtree(store)
    for row in result["rows"]:
        row["ratio"] = round(row["posswarm"] / max(row["casync"], 1), 3)
    if args.sweep:
        result["sweep"] = sweep(v1, updates)
        result["torrent_cost"] = torrent_cost(first.path, workdir)
    for kind in kinds:  # not before: ext4 scans recently deleted inodes on every create for minutes after
        updates[kind].unlink()
        shutil.rmtree(workdir / f"tree-{kind}")
    if not args.no_random:
        result["random"] = random_rows(workdir, min(size, 256 * MiB), key)
    return result


def _content(index: Path, chunk_files) -> int:
    """Bytes of content in casync's chunk files ``chunk_files`` (``<id>.cacnk``), read from ``index``."""
    lengths = casync_contents(index)
    return sum(lengths[p.name.removesuffix(".cacnk")] for p in chunk_files)


def random_rows(workdir: Path, size: int, key) -> dict:
    """posswarm on random bytes now and with the chunking of before compression (64/256/1024 KiB, stored as is)."""
    r1, r2, changed = random_pair(workdir, size)
    out = workdir / "random-releases"
    a = publish_release(r1, name="noise", version="1", private_key=key, out=out)
    b = publish_release(r2, name="noise", version="2", private_key=key, out=out)
    before = FastCDC(256 << 10, min_size=64 << 10, max_size=1 << 20)
    old = {blake3.blake3(c.data).digest(): c.length for c in before.cut_file(str(r1))}
    old_update = 0
    for c in before.cut_file(str(r2)):
        d = blake3.blake3(c.data).digest()
        if d not in old:
            old[d] = c.length
            old_update += c.length
    return {"size": size, "changed": changed, "full_now": wire_of_release(a.path)["stored"],
            "full_before": sum(old.values()) - old_update, "update_now": wire_of_release(b.path, a.path)["stored"],
            "update_before": old_update, "publish_mbs": round(size / a.seconds / 1e6, 1)}


def _commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent)
    return done.stdout.strip() or "unknown"


def _mib(n: int) -> str:
    return f"{n / MiB:,.1f} MiB"


def table(r: dict) -> str:
    """The run as markdown: wire bytes, then speeds, then the sweep and random data if measured."""
    lines = [f"Commit `{r['commit']}`: a {r['image_bytes'] >> 20} MiB ext4 image of {_mib(r['file_bytes'])} of this "
             f"machine's files, chunks {r['chunk_sizes'][0] >> 10}/{r['chunk_sizes'][1] >> 10}/"
             f"{r['chunk_sizes'][2] >> 10} KiB, zstd level {r['zstd_level']}.", "",
             "| on the wire | changed content | posswarm | casync | posswarm ÷ casync | chunks (posswarm / casync) "
             "| metadata (manifest+torrent / caibx) |", "|---|---:|---:|---:|---:|---:|---:|"]
    for row in r["rows"]:
        lines.append(f"| {row['what']} | {_mib(row['content'])} | {_mib(row['posswarm'])} | {_mib(row['casync'])} "
                     f"| **{row['ratio']:.3f} ×** | {row['posswarm_chunks']:,} / {row['casync_chunks']:,} "
                     f"| {row['posswarm_metadata'] / 1024:,.0f} KiB / {row['casync_metadata'] / 1024:,.0f} KiB |")
    lines += ["", f"`zstd -3` of the whole image: {_mib(r['zstd_image'])}. Publish {r['publish_mbs']} MB/s "
              f"against `dd conv=fsync` {r['dd_mbs']} MB/s ({r['publish_mbs'] / r['dd_mbs']:.0%}), "
              f"{r['publish_cpu_s_per_gb']} CPU-s per GB"
              + (f" ({r['publish_kernel_cpu_s_per_gb']} of them the kernel's)" if "publish_kernel_cpu_s_per_gb" in r else "")
              + "; casync make "
              f"{r['casync_make_mbs']} MB/s; one core decodes and verifies {r['decode_mbs']} MB/s of content."]
    if all("casync_content" in row for row in r["rows"]):  # chunking apart from compression
        lines += ["", "Content in the chunks sent, posswarm / casync: " + "; ".join(
            f"{row['what']} {_mib(row['posswarm_content'])} / {_mib(row['casync_content'])} "
            f"(stored at {row['posswarm'] / row['posswarm_content']:.1%} / {row['casync'] / row['casync_content']:.1%})"
            for row in r["rows"]) + "."]
    if "sweep" in r:
        kinds = [k for k in r["sweep"][0] if k not in ("min", "avg", "max", "level", "full", "chunks", "pack_mbs")]
        lines += ["", "| FastCDC min/avg/max | zstd | full image | " + " | ".join(f"update: {k}" for k in kinds)
                  + " | chunks | pack MB/s (all cores) |", "|---|---:|---:|" + "---:|" * len(kinds) + "---:|---:|"]
        for s in r["sweep"]:
            cells = " | ".join(_mib(s[k]) if k in s else "" for k in kinds)
            lines.append(f"| {s['min'] >> 10}/{s['avg'] >> 10}/{s['max'] >> 10} KiB | {s['level']} | {_mib(s['full'])} "
                         f"| {cells} | {s['chunks']:,} | {s['pack_mbs']} |")
    if "torrent_cost" in r:
        lines += ["", "| the full image's torrent | files | torrent | hashing | loopback transfer | CPU (both ends) |",
                  "|---|---:|---:|---:|---:|---:|"]
        for t in r["torrent_cost"]:
            lines.append(f"| {t['what']} | {t['files']:,} | {t['torrent'] / 1024:,.0f} KiB | {t['hash_seconds']} s "
                         f"| {t['transfer_seconds']} s ({t['transfer_mbs']} MB/s) | {t['cpu_seconds']} s |")
    if "random" in r:
        x = r["random"]
        lines += ["", f"Random bytes ({x['size'] >> 20} MiB, {_mib(x['changed'])} replaced in 3 regions): full image "
                  f"{_mib(x['full_now'])} (before compression and these chunk sizes: {_mib(x['full_before'])}, "
                  f"{x['full_now'] / x['full_before'] - 1:+.2%}); update {_mib(x['update_now'])} (before: "
                  f"{_mib(x['update_before'])}, {x['update_now'] / x['update_before'] - 1:+.2%}); publish "
                  f"{x['publish_mbs']} MB/s."]
    return "\n".join(lines)


def write_docs(text: str, doc: Path = DOC) -> None:
    """Replace the generated block of docs/benchmarks.md's delta section with ``text``."""
    body = doc.read_text()
    block = f"{BEGIN}\n{text}\n{END}"
    if BEGIN in body and END in body:
        body = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, body, flags=re.S)
    else:
        body = body.rstrip("\n") + "\n\n" + block + "\n"
    doc.write_text(body)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logs.configure("warning", component="bench")
    missing = sorted({pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None})
    if missing:
        print(f"{PROG}: {', '.join(missing)} not installed (apt-get install {' '.join(missing)})", file=sys.stderr)
        return 2
    if args.image_mb < 16:
        print(f"{PROG}: --image-mb {args.image_mb}: use at least 16", file=sys.stderr)
        return 2
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-delta-", dir="/var/tmp"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        result = bench(args, workdir)
    except PosswarmError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    text = table(result)
    if args.write_docs:
        write_docs(text)
    print(json.dumps(result, indent=1) if args.json else text)
    return 0
