"""``posswarm-bench tracker``: HTTP and UDP announce load against posswarm-tracker and opentracker, side by side.

Both trackers run as processes pinned to CPU 0; the load comes from a separate process pinned to
CPU 1 (this same module, ``--load-worker``). For each tracker and transport it measures:

* saturation: ``--connections`` clients announce back to back for ``--duration`` s -> announces/s, p50/p99;
* paced: the same clients announce at ``--rate`` per second in total, latency counted from the
  scheduled send time (so a stall is not hidden by the clients waiting for it) -> p50/p99;
* memory: resident-set growth after ``--peers`` distinct peers (100 per torrent) announced over UDP.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote_from_bytes

import trio

from tools.lab import bin_path

PEERS_PER_TORRENT = 100
UDP_TIMEOUT = 1.0


# ---- the load process -------------------------------------------------------------------------


def _peer(n: int) -> tuple[bytes, bytes, int]:
    """Peer number n: (info_hash, peer_id, port), 100 peers per torrent, all distinct."""
    torrent = n // PEERS_PER_TORRENT
    return (struct.pack(">I", torrent).rjust(20, b"\x7f"), b"-BT0001-" + struct.pack(">Q", n).rjust(12, b"0"),
            1024 + n % 60000)


def _http_request(n: int) -> bytes:
    info_hash, peer_id, port = _peer(n)
    q = (f"info_hash={quote_from_bytes(info_hash, safe='')}&peer_id={quote_from_bytes(peer_id, safe='')}"
         f"&port={port}&uploaded=0&downloaded=0&left={n % 2}&compact=1&numwant=50")
    return f"GET /announce?{q} HTTP/1.1\r\nHost: tracker\r\n\r\n".encode()


def _udp_announce(cid: int, tid: int, n: int) -> bytes:
    info_hash, peer_id, port = _peer(n)
    return struct.pack(">QII20s20sQQQIIIiH", cid, 1, tid, info_hash, peer_id, 0, n % 2, 0, 0, 0, 0, 50, port)


class _Http:
    """One keep-alive HTTP/1.1 connection; reconnects when the server closes (opentracker closes every time)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port, self.stream, self.buffer = host, port, None, b""

    async def ask(self, request: bytes) -> bool:
        """Send one request and read its answer; True when it is not a bencoded failure."""
        reused = self.stream is not None
        if self.stream is None:
            self.stream = await trio.open_tcp_stream(self.host, self.port)
            self.buffer = b""
        try:
            await self.stream.send_all(request)
            while b"\r\n\r\n" not in self.buffer:
                await self._more()
        except (EOFError, trio.BrokenResourceError, OSError):
            if not reused:
                raise
            # The server closed the idle connection without saying so (opentracker does): reconnect once.
            await self.stream.aclose()
            self.stream = None
            return await self.ask(request)
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        length, close = None, head.startswith(b"HTTP/1.0")  # 1.0 closes unless it says keep-alive
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection":
                close = b"close" in value.lower()
        if length is None:  # no length: the body runs until the server closes
            try:
                while True:
                    await self._more()
            except EOFError:
                pass
            body, close = self.buffer, True
        else:
            while len(self.buffer) < length:
                await self._more()
            body, self.buffer = self.buffer[:length], self.buffer[length:]
        if close:
            await self.stream.aclose()
            self.stream = None
        return not body.startswith(b"d14:failure reason")

    async def _more(self) -> None:
        data = await self.stream.receive_some(65536)
        if not data:
            raise EOFError
        self.buffer += data


async def _load(spec: dict) -> dict:
    """Run one load phase described by ``spec``; returns counts and latencies in ms."""
    host, port, transport = spec["host"], spec["port"], spec["transport"]
    connections, duration, rate = spec["connections"], spec["duration"], spec.get("rate")
    first, count = spec.get("first", 0), spec.get("count")  # memory phase: announce peers first..first+count once
    latencies: list[float] = []
    failures = 0
    pool = spec.get("peers", 10_000)
    # Built before the clock starts, so neither the rate nor the first paced latencies pay for it.
    http_pool = [_http_request(n) for n in range(min(pool, 20_000))] if transport == "http" else []
    numbers = iter(range(first, first + count)) if count is not None else None
    cpu = time.process_time()
    start = trio.current_time()
    deadline = start + duration

    def next_number(rng: random.Random) -> int | None:
        if numbers is not None:
            return next(numbers, None)
        return rng.randrange(pool)

    async def http_client(i: int) -> None:
        nonlocal failures
        rng, conn = random.Random(i), _Http(host, port)
        step = connections / rate if rate else 0.0
        scheduled = start + i * step / connections
        while (now := trio.current_time()) < deadline:
            n = next_number(rng)
            if n is None:
                return
            if rate:
                scheduled += step
                await trio.sleep_until(scheduled)
            t0 = scheduled if rate else now
            try:
                answered = await conn.ask(http_pool[n] if n < len(http_pool) else _http_request(n))
            except (OSError, EOFError, trio.BrokenResourceError, ValueError):
                answered = False
                conn = _Http(host, port)
            if answered:
                latencies.append(trio.current_time() - t0)
            else:
                failures += 1

    async def udp_client(i: int) -> None:
        nonlocal failures
        rng = random.Random(i)
        step = connections / rate if rate else 0.0
        scheduled = start + i * step / connections
        with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            await sock.connect((host, port))
            cid, tid = None, i << 16
            while (now := trio.current_time()) < deadline:
                tid = (tid + 1) & 0xFFFFFFFF
                if cid is None:
                    with trio.move_on_after(UDP_TIMEOUT):
                        await sock.send(struct.pack(">QII", 0x41727101980, 0, tid))
                        reply = await sock.recv(64)
                        cid = struct.unpack(">IIQ", reply[:16])[2]
                    if cid is None:
                        failures += 1
                    continue
                n = next_number(rng)
                if n is None:
                    return
                if rate:
                    scheduled += step
                    await trio.sleep_until(scheduled)
                t0 = scheduled if rate else now
                answered = False
                with trio.move_on_after(UDP_TIMEOUT):
                    await sock.send(_udp_announce(cid, tid, n))
                    while True:  # a late answer to an earlier, timed-out request is skipped
                        reply = await sock.recv(4096)
                        if reply[4:8] == struct.pack(">I", tid):
                            answered = reply[:4] == b"\x00\x00\x00\x01"
                            break
                if answered:
                    latencies.append(trio.current_time() - t0)
                else:
                    failures += 1

    async with trio.open_nursery() as nursery:
        for i in range(connections):
            nursery.start_soon(http_client if transport == "http" else udp_client, i)
    elapsed = trio.current_time() - start
    # Who was the bottleneck: a load process near 100 % of its core means the tracker could answer more.
    load_cpu = time.process_time() - cpu
    latencies.sort()
    return {
        "announces": len(latencies),
        "failures": failures,
        "seconds": round(elapsed, 2),
        "per_second": round(len(latencies) / elapsed) if elapsed else 0,
        "load_cpu_percent": round(100 * load_cpu / elapsed) if elapsed else 0,
        "p50_ms": round(1000 * latencies[len(latencies) // 2], 2) if latencies else None,
        "p99_ms": round(1000 * latencies[int(len(latencies) * 0.99)], 2) if latencies else None,
    }


def _run_load(spec: dict) -> dict:
    """Run ``spec`` in a fresh load process on CPU 1, so the load never steals the tracker's core."""
    code = "import sys; from tools.bench_tracker import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run([sys.executable, "-c", code, "--load-worker", json.dumps(spec)],
                          capture_output=True, preexec_fn=lambda: _pin(1))
    if done.returncode != 0:
        raise SystemExit(f"posswarm-bench tracker: the load process failed:\n{done.stderr.decode(errors='replace')}")
    return json.loads(done.stdout)


# ---- the trackers -------------------------------------------------------------------------------


def _pin(cpu: int) -> None:
    if hasattr(os, "sched_setaffinity") and cpu < os.cpu_count():
        os.sched_setaffinity(0, {cpu})


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Tracker:
    def __init__(self, name: str, argv: list[str], http: int, udp: int, cwd: Path | None = None) -> None:
        self.name, self.http, self.udp = name, http, udp
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        preexec_fn=lambda: _pin(0), cwd=cwd)
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
    return _Tracker("posswarm-tracker", [bin_path("posswarm-tracker"), "serve", "--open", "--listen",
                                         f"127.0.0.1:{http}", "--udp", f"127.0.0.1:{udp}", "--log-level", "error",
                                         "--policy", "completeness"], http, udp)


def _whitelist(workdir: Path, peers: int) -> None:
    # Debian builds opentracker as a closed tracker (WANT_ACCESSLIST_WHITE): it refuses any torrent
    # not listed, so list every torrent the load announces (hex info-hashes, one a line).
    path = workdir / "whitelist"
    torrents = range(max(peers, 1) // PEERS_PER_TORRENT + 1)
    path.write_text("".join(_peer(t * PEERS_PER_TORRENT)[0].hex() + "\n" for t in torrents))
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
            _run_load({**base, "duration": 1.0})  # warm-up: swarms filled, code paths hot
            cpu = tracker.cpu_seconds()
            saturated = result[f"{transport}_saturated"] = _run_load({**base, "duration": args.duration})
            saturated["tracker_cpu_percent"] = round(100 * (tracker.cpu_seconds() - cpu) / saturated["seconds"])
            result[f"{transport}_paced"] = _run_load({**base, "duration": args.duration, "rate": args.rate})
    finally:
        tracker.stop()
    tracker = _start(name, workdir)  # a fresh process, so its memory holds only the measured peers
    try:
        before = tracker.rss()
        spec = {"host": "127.0.0.1", "port": tracker.udp, "transport": "udp", "connections": args.connections,
                "duration": 600.0, "first": 0, "count": args.peers}
        filled = _run_load(spec)
        after = tracker.rss()
        result["memory"] = {"peers": filled["announces"], "rss_growth_bytes": after - before,
                            "bytes_per_peer": round((after - before) / max(filled["announces"], 1))}
    finally:
        tracker.stop()
    return result


# ---- the command ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="posswarm-bench tracker", description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=5.0, help="seconds per measured phase (default 5)")
    p.add_argument("--connections", type=int, default=32, help="concurrent clients of the load process (default 32)")
    p.add_argument("--rate", type=int, default=2000, help="announces/s of the paced phase (default 2000)")
    p.add_argument("--pool", type=int, default=10_000, help="distinct peers the load announces as (default 10000)")
    p.add_argument("--peers", type=int, default=100_000, help="peers for the memory measurement (default 100000)")
    p.add_argument("--skip-opentracker", action="store_true", help="measure posswarm-tracker only")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--load-worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.load_worker:
        gc.set_threshold(50_000, 20, 100)  # the load's own GC pauses would count as tracker latency
        print(json.dumps(trio.run(_load, json.loads(args.load_worker))))
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
