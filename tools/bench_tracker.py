"""``posswarm-bench tracker``: HTTP and UDP announce load against posswarm-tracker and opentracker, side by side.

Both trackers run as processes pinned to CPU 0; the load comes from a separate process pinned to
CPU 1 (this same module, ``--load-worker``). For each tracker and transport it measures:

* saturation: ``--connections`` clients announce back to back for ``--duration`` s -> announces/s, p50/p99;
* paced: the same clients announce at ``--rate`` per second in total, latency counted from the
  scheduled send time (so a stall is not hidden by the clients waiting for it) -> p50/p99;
* memory: resident-set growth after ``--peers`` distinct peers (100 per torrent) announced over UDP.

``--production`` adds a posswarm-tracker row the way central runs it: private mode (store passkeys,
a catalog of the torrents), store-first, and every client announcing as a till of its own store
from its own source address (127.0.x.y), with ``ip=`` its LAN address. ``--attack`` repeats the
paced HTTP phase while a third process holds connections open with half-sent request heads
(slowloris) and opens and drops connections as fast as it can (flood), all to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tools.lab import bin_path, write_operator_token
from tools.tracker_load import PASSKEY, PEERS_PER_TORRENT, STORES, WORKER, peer_of, pin_to, run_load

# ---- the trackers -------------------------------------------------------------------------------


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Tracker:
    def __init__(self, name: str, argv: list[str], http: int, udp: int, cwd: Path | None = None) -> None:
        self.name, self.http, self.udp = name, http, udp
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        preexec_fn=lambda: pin_to(0), cwd=cwd)
        deadline = time.monotonic() + 20
        while not self._answers():  # a process, not a trio task: poll its port until it listens
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"posswarm-bench tracker: {name} did not start (exit {self.process.returncode})")
            time.sleep(0.05)

    def _answers(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.http), timeout=0.2).close()
            return True
        except OSError:
            return False

    def rss(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def cpu_seconds(self) -> float:
        """User + system CPU time the tracker process has used so far."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def _posswarm(http: int, udp: int) -> _Tracker:
    return _Tracker("posswarm-tracker", [bin_path("posswarm-tracker"), "serve", "--open", "--open-stats", "--plain-http", "--listen",
                                         f"127.0.0.1:{http}", "--udp", f"127.0.0.1:{udp}", "--log-level", "error",
                                         "--policy", "completeness"], http, udp)


class _Catalog:
    """A seeder's /catalog listing every torrent the load announces, so a private tracker tracks them (v1 hashes)."""

    def __init__(self, peers: int) -> None:
        import http.server
        import threading

        torrents = range(max(peers, 1) // PEERS_PER_TORRENT + 1)
        doc = {"format": 1, "seeds": [], "releases": [
            {"name": "pos-os", "version": str(t), "kind": "image", "size": 1000,
             "info_hash_v1": peer_of(t * PEERS_PER_TORRENT)[0].hex(),
             "targets": {"stores": [], "device_classes": [], "ring": "all"},
             "manifest": f"/releases/pos-os/{t}/manifest.msgpack", "torrent": f"/releases/pos-os/{t}/release.torrent"}
            for t in torrents]}
        body = json.dumps(doc).encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (the stdlib's name)
                found = self.path == "/catalog"
                self.send_response(200 if found else 404)
                self.send_header("Content-Length", str(len(body) if found else 0))
                self.end_headers()
                if found:
                    self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/catalog"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# The attack's 20 x 256 connections fill a table of this size (the default, 32768, would need more open files than
# one attacking process may hold); what is measured is announces getting through a full table.
ATTACKED_SLOTS = 4096


def _production(http: int, udp: int, workdir: Path, catalog: str) -> _Tracker:
    # Central's way: private, store-first, a passkey per store, ip= believed from no proxy.
    config = workdir / "tracker.toml"
    passkeys = "".join(f'S{store:04d} = "{PASSKEY.format(store=store)}"\n' for store in range(STORES))
    token = write_operator_token(workdir / "operator.token")
    config.write_text(f'listen = "127.0.0.1:{http}"\nudp = "127.0.0.1:{udp}"\ncatalog = "{catalog}"\n'
                      f'policy = "store-first"\ntrusted_proxies = []\noperator_token_file = "{token}"\n'
                      f'plain_http = true\nmax_connections = {ATTACKED_SLOTS}\n[passkeys]\n{passkeys}')
    return _Tracker("posswarm-tracker (production)", [bin_path("posswarm-tracker"), "serve", "--config", str(config),
                                                      "--log-level", "error"], http, udp)


def _whitelist(workdir: Path, peers: int) -> None:
    # Debian builds opentracker as a closed tracker (WANT_ACCESSLIST_WHITE): it refuses any torrent
    # not listed, so list every torrent the load announces (hex info-hashes, one a line).
    path = workdir / "whitelist"
    torrents = range(max(peers, 1) // PEERS_PER_TORRENT + 1)
    path.write_text("".join(peer_of(t * PEERS_PER_TORRENT)[0].hex() + "\n" for t in torrents))
    # opentracker reads it as user nobody (measured: a 0700 temp dir = "Can't open accesslist file").
    workdir.chmod(0o755)
    path.chmod(0o644)


def _opentracker(http: int, udp: int, workdir: Path) -> _Tracker:
    # Debian's build with its defaults (no whitelist); -d/-u (chroot, drop to a user) left out: they
    # need a prepared user and directory, and change nothing in what is measured.
    return _Tracker("opentracker", ["opentracker", "-i", "127.0.0.1", "-p", str(http), "-P", str(udp),
                                    "-w", str(workdir / "whitelist")], http, udp, cwd=workdir)


def _start(name: str, workdir: Path) -> _Tracker:
    http, udp = _free_port(socket.SOCK_STREAM), _free_port(socket.SOCK_DGRAM)
    return _posswarm(http, udp) if name == "posswarm-tracker" else _opentracker(http, udp, workdir)


def _bench_one(name: str, args, workdir: Path) -> dict:
    result: dict = {"tracker": name}
    tracker = _start(name, workdir)
    try:
        for transport in ("http", "udp"):
            port = tracker.http if transport == "http" else tracker.udp
            base = {"host": "127.0.0.1", "port": port, "transport": transport, "connections": args.connections,
                    "peers": args.pool}
            run_load({**base, "duration": 1.0})  # warm-up: swarms filled, code paths hot
            cpu = tracker.cpu_seconds()
            saturated = result[f"{transport}_saturated"] = run_load({**base, "duration": args.duration})
            saturated["tracker_cpu_percent"] = round(100 * (tracker.cpu_seconds() - cpu) / saturated["seconds"])
            result[f"{transport}_paced"] = run_load({**base, "duration": args.duration, "rate": args.rate})
    finally:
        tracker.stop()
    tracker = _start(name, workdir)  # a fresh process, so its memory holds only the measured peers
    try:
        before = tracker.rss()
        spec = {"host": "127.0.0.1", "port": tracker.udp, "transport": "udp", "connections": args.connections,
                "duration": 600.0, "first": 0, "count": args.peers}
        filled = run_load(spec)
        after = tracker.rss()
        result["memory"] = {"peers": filled["announces"], "rss_growth_bytes": after - before,
                            "bytes_per_peer": round((after - before) / max(filled["announces"], 1))}
    finally:
        tracker.stop()
    return result


def _bench_production(args, workdir: Path) -> dict:
    """The production row: HTTP saturated and paced, then paced again under attack if asked."""
    catalog = _Catalog(args.pool)
    http, udp = _free_port(socket.SOCK_STREAM), _free_port(socket.SOCK_DGRAM)
    tracker = _production(http, udp, workdir, catalog.url)
    result: dict = {"tracker": tracker.name}
    try:
        base = {"host": "127.0.0.1", "port": http, "transport": "http", "connections": args.connections,
                "peers": args.pool, "production": True}
        run_load({**base, "duration": 1.0})  # warm-up: the catalog polled, swarms filled, code paths hot
        cpu = tracker.cpu_seconds()
        saturated = result["http_saturated"] = run_load({**base, "duration": args.duration})
        saturated["tracker_cpu_percent"] = round(100 * (tracker.cpu_seconds() - cpu) / saturated["seconds"])
        result["http_paced"] = run_load({**base, "duration": args.duration, "rate": args.rate})
        if args.attack:
            spec = {"host": "127.0.0.1", "port": http, "transport": "attack", "connections": 0,
                    "duration": args.duration + 12, "sources": args.attack_sources, "per_source": 256,
                    "trickle_every": args.attack_trickle}
            attacker = subprocess.Popen([sys.executable, "-c", WORKER, json.dumps(spec)],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=lambda: pin_to(1))
            time.sleep(12)  # let the attack fill every slot and reach its steady state (header_timeout is 10 s)
            cpu = tracker.cpu_seconds()
            attacked = result["http_paced_under_attack"] = run_load({**base, "duration": args.duration, "rate": args.rate})
            attacked["tracker_cpu_percent"] = round(100 * (tracker.cpu_seconds() - cpu) / attacked["seconds"])
            out, err = attacker.communicate(timeout=60)
            if attacker.returncode != 0:
                raise SystemExit(f"posswarm-bench tracker: the attack process failed:\n{err.decode(errors='replace')}")
            result["attack"] = json.loads(out)
    finally:
        tracker.stop()
        catalog.close()
    return result


# ---- the command ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    from tools import bench_tracker_tls  # it starts its tracker with this module's _Tracker

    p = argparse.ArgumentParser(prog="posswarm-bench tracker", description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=5.0, help="seconds per measured phase (default 5)")
    p.add_argument("--connections", type=int, default=32, help="concurrent clients of the load process (default 32)")
    p.add_argument("--rate", type=int, default=2000, help="announces/s of the paced phase (default 2000)")
    p.add_argument("--pool", type=int, default=10_000, help="distinct peers the load announces as (default 10000)")
    p.add_argument("--peers", type=int, default=100_000, help="peers for the memory measurement (default 100000)")
    p.add_argument("--skip-opentracker", action="store_true", help="measure posswarm-tracker only")
    p.add_argument("--production", action="store_true",
                   help="measure the production path only: private passkeys, store-first, a source address per store")
    p.add_argument("--attack", action="store_true",
                   help="with --production: the paced phase again under a slowloris and connection flood")
    p.add_argument("--attack-sources", type=int, default=20,
                   help="source addresses of the attack, 256 connections each (default 20: above the 4096 slots of this bench)")
    p.add_argument("--attack-trickle", type=float, default=2.0,
                   help="seconds between the bytes each attacking connection sends (default 2)")
    p.add_argument("--certificates", action="store_true",
                   help="measure enrolled nodes announcing over mutual TLS: a new handshake each announce, kept "
                        "connections, memory per idle kept connection (tools/bench_tracker_tls.py)")
    bench_tracker_tls.add_arguments(p)
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    args = p.parse_args(argv)
    if args.certificates:
        print(json.dumps(bench_tracker_tls.bench(args), indent=2))
        return 0
    if args.production:
        with tempfile.TemporaryDirectory(prefix="bench-tracker-") as workdir:
            result = _bench_production(args, Path(workdir))
        print(json.dumps(result, indent=2))
        return 0
    names = ["posswarm-tracker"]
    if not args.skip_opentracker:
        if shutil.which("opentracker") is None:
            print("posswarm-bench tracker: opentracker is not installed (apt install opentracker, or --skip-opentracker)",
                  file=sys.stderr)
            return 2
        names.append("opentracker")
    with tempfile.TemporaryDirectory(prefix="bench-tracker-") as workdir:
        _whitelist(Path(workdir), max(args.peers, args.pool))
        results = [_bench_one(name, args, Path(workdir)) for name in names]
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        _print_table(results, args)
    return 0


def _print_table(results: list[dict], args) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"tracker announces ({args.connections} clients, {args.duration:g} s per phase; "
                        f"paced at {args.rate}/s; memory at {args.peers} peers)")
    for column in ("tracker", "transport", "announces/s", "p50 ms", "p99 ms", "CPU % tracker/load", "paced p50 ms",
                   "paced p99 ms", "failures"):
        table.add_column(column, justify="left" if column in ("tracker", "transport") else "right")
    for r in results:
        for transport in ("http", "udp"):
            sat, paced = r[f"{transport}_saturated"], r[f"{transport}_paced"]
            table.add_row(r["tracker"], transport, str(sat["per_second"]), str(sat["p50_ms"]), str(sat["p99_ms"]),
                          f"{sat['tracker_cpu_percent']} / {sat['load_cpu_percent']}", str(paced["p50_ms"]),
                          str(paced["p99_ms"]), str(sat["failures"] + paced["failures"]))
    console = Console(width=max(Console().width, 120))
    console.print(table)
    for r in results:
        m = r["memory"]
        console.print(f"{r['tracker']}: {m['bytes_per_peer']} bytes of resident memory per peer "
                      f"({m['rss_growth_bytes'] / 2**20:.1f} MiB for {m['peers']} peers)")
