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


STORES = 250  # --production: clients are tills of this many stores, one store per source address
PASSKEY = "bench-{store:04d}-a1B2c3D4e5F6g7H8i9"


def _store_of(n: int) -> int:
    return n % STORES


def _http_request(n: int, production: bool = False) -> bytes:
    info_hash, peer_id, port = _peer(n)
    q = (f"info_hash={quote_from_bytes(info_hash, safe='')}&peer_id={quote_from_bytes(peer_id, safe='')}"
         f"&port={port}&uploaded=0&downloaded=0&left={n % 2}&compact=1&numwant=50")
    path = "/announce"
    if production:  # a till of its store, as posswarm/announce.py sends it
        store = _store_of(n)
        path += "/" + PASSKEY.format(store=store)
        q += (f"&store=S{store:04d}&role=device&class=pos&node=till-{n}&release=pos-os@{n // PEERS_PER_TORRENT}"
              f"&size=1000&wan=0&lan={n % 1000}&installed={n % 2}&ip=10.{store // 250}.{store % 250}.{n % 250 + 1}")
    return f"GET {path}?{q} HTTP/1.1\r\nHost: tracker\r\n\r\n".encode()


def _source_address(store: int) -> str:
    return f"127.0.{1 + store // 250}.{store % 250 + 1}"


async def attack(host: str, port: int, *, sources: list[str], per_source: int, until: float,
                 trickle_every: float = 0.5) -> dict:
    """Slowloris and connection flood until ``until`` (trio time): ``per_source`` connections per source
    address that send half a request head and then a byte every ``trickle_every`` s, reopened as soon
    as the tracker closes them. Returns how many connections were opened and how many the tracker ended."""
    counts = {"opened": 0, "ended_by_tracker": 0}

    async def one(source: str) -> None:
        while trio.current_time() < until:
            try:
                stream = await trio.open_tcp_stream(host, port, local_address=source)
            except OSError:
                await trio.sleep(0.01)
                continue
            counts["opened"] += 1
            try:
                await stream.send_all(b"GET /announce?info_hash=")
                while trio.current_time() < until:
                    with trio.move_on_after(trickle_every):
                        if await stream.receive_some(1024) == b"":
                            counts["ended_by_tracker"] += 1
                            break
                    await stream.send_all(b"a")
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                counts["ended_by_tracker"] += 1
            finally:
                await stream.aclose()

    async with trio.open_nursery() as nursery:
        for source in sources:
            for _ in range(per_source):
                nursery.start_soon(one, source)
    return counts


def _udp_announce(cid: int, tid: int, n: int) -> bytes:
    info_hash, peer_id, port = _peer(n)
    return struct.pack(">QII20s20sQQQIIIiH", cid, 1, tid, info_hash, peer_id, 0, n % 2, 0, 0, 0, 0, 50, port)


class _Http:
    """One keep-alive HTTP/1.1 connection; reconnects when the server closes (opentracker closes every time)."""

    def __init__(self, host: str, port: int, source: str | None = None) -> None:
        self.host, self.port, self.source, self.stream, self.buffer = host, port, source, None, b""

    async def ask(self, request: bytes) -> bool:
        """Send one request and read its answer; True when it is not a bencoded failure."""
        reused = self.stream is not None
        if self.stream is None:
            self.stream = await trio.open_tcp_stream(self.host, self.port, local_address=self.source)
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
    production = spec.get("production", False)
    if transport == "attack":
        return await attack(host, port, sources=[f"127.0.200.{i + 1}" for i in range(spec["sources"])],
                            per_source=spec["per_source"], until=trio.current_time() + duration,
                            trickle_every=spec["trickle_every"])
    # Built before the clock starts, so neither the rate nor the first paced latencies pay for it.
    http_pool = [_http_request(n, production) for n in range(min(pool, 20_000))] if transport == "http" else []
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
        # Production: each client is a store's NAT address, and announces as that store's tills only.
        source = _source_address(i % STORES) if production else None
        rng, conn = random.Random(i), _Http(host, port, source)
        step = connections / rate if rate else 0.0
        scheduled = start + i * step / connections
        while (now := trio.current_time()) < deadline:
            n = next_number(rng)
            if n is None:
                return
            if production:  # a peer of this client's store
                n = n - _store_of(n) + i % STORES
                n = n if n < pool else n - STORES
            if rate:
                scheduled += step
                await trio.sleep_until(scheduled)
            t0 = scheduled if rate else now
            try:
                answered = await conn.ask(http_pool[n] if n < len(http_pool) else _http_request(n, production))
            except (OSError, EOFError, trio.BrokenResourceError, ValueError):
                answered = False
                conn = _Http(host, port, source)
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


class _Catalog:
    """A seeder's /catalog listing every torrent the load announces, so a private tracker tracks them (v1 hashes)."""

    def __init__(self, peers: int) -> None:
        import http.server
        import threading

        torrents = range(max(peers, 1) // PEERS_PER_TORRENT + 1)
        doc = {"format": 1, "seeds": [], "releases": [
            {"name": "pos-os", "version": str(t), "kind": "image", "size": 1000,
             "info_hash_v1": _peer(t * PEERS_PER_TORRENT)[0].hex(),
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


def _production(http: int, udp: int, workdir: Path, catalog: str) -> _Tracker:
    # Central's way: private, store-first, a passkey per store, ip= believed from no proxy.
    config = workdir / "tracker.toml"
    passkeys = "".join(f'S{store:04d} = "{PASSKEY.format(store=store)}"\n' for store in range(STORES))
    config.write_text(f'listen = "127.0.0.1:{http}"\nudp = "127.0.0.1:{udp}"\ncatalog = "{catalog}"\n'
                      f'policy = "store-first"\ntrusted_proxies = []\n[passkeys]\n{passkeys}')
    return _Tracker("posswarm-tracker (production)", [bin_path("posswarm-tracker"), "serve", "--config", str(config),
                                                      "--log-level", "error"], http, udp)


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


def _bench_production(args, workdir: Path) -> dict:
    """The production row: HTTP saturated and paced, then paced again under attack if asked."""
    catalog = _Catalog(args.pool)
    http, udp = _free_port(socket.SOCK_STREAM), _free_port(socket.SOCK_DGRAM)
    tracker = _production(http, udp, workdir, catalog.url)
    result: dict = {"tracker": tracker.name}
    try:
        base = {"host": "127.0.0.1", "port": http, "transport": "http", "connections": args.connections,
                "peers": args.pool, "production": True}
        _run_load({**base, "duration": 1.0})  # warm-up: the catalog polled, swarms filled, code paths hot
        cpu = tracker.cpu_seconds()
        saturated = result["http_saturated"] = _run_load({**base, "duration": args.duration})
        saturated["tracker_cpu_percent"] = round(100 * (tracker.cpu_seconds() - cpu) / saturated["seconds"])
        result["http_paced"] = _run_load({**base, "duration": args.duration, "rate": args.rate})
        if args.attack:
            code = "import sys; from tools.bench_tracker import main; sys.exit(main(sys.argv[1:]))"
            spec = {"host": "127.0.0.1", "port": http, "transport": "attack", "connections": 0,
                    "duration": args.duration + 12, "sources": args.attack_sources, "per_source": 256,
                    "trickle_every": args.attack_trickle}
            attacker = subprocess.Popen([sys.executable, "-c", code, "--load-worker", json.dumps(spec)],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=lambda: _pin(1))
            time.sleep(12)  # let the attack fill every slot and reach its steady state (header_timeout is 10 s)
            cpu = tracker.cpu_seconds()
            attacked = result["http_paced_under_attack"] = _run_load({**base, "duration": args.duration, "rate": args.rate})
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
                   help="source addresses of the attack, 256 connections each (default 20: above the 4096 slots)")
    p.add_argument("--attack-trickle", type=float, default=2.0,
                   help="seconds between the bytes each attacking connection sends (default 2)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--load-worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.load_worker:
        gc.set_threshold(50_000, 20, 100)  # the load's own GC pauses would count as tracker latency
        print(json.dumps(trio.run(_load, json.loads(args.load_worker))))
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
