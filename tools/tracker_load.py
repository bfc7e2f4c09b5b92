"""The announce load ``posswarm-bench tracker`` puts on a tracker: HTTP and UDP clients, paced or saturating, and a
slowloris and connection flood, each run in a load process of its own pinned to CPU 1."""

from __future__ import annotations

import gc
import json
import os
import random
import socket
import struct
import subprocess
import sys
import time
from urllib.parse import quote_from_bytes

import trio

PEERS_PER_TORRENT = 100
UDP_TIMEOUT = 1.0


# ---- the load process -------------------------------------------------------------------------


def peer_of(n: int) -> tuple[bytes, bytes, int]:
    """Peer number n: (info_hash, peer_id, port), 100 peers per torrent, all distinct."""
    torrent = n // PEERS_PER_TORRENT
    return (struct.pack(">I", torrent).rjust(20, b"\x7f"), b"-BT0001-" + struct.pack(">Q", n).rjust(12, b"0"),
            1024 + n % 60000)


STORES = 250  # --production: clients are tills of this many stores, one store per source address
PASSKEY = "bench-{store:04d}-a1B2c3D4e5F6g7H8i9"


def _store_of(n: int) -> int:
    return n % STORES


def _http_request(n: int, production: bool = False) -> bytes:
    info_hash, peer_id, port = peer_of(n)
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
    info_hash, peer_id, port = peer_of(n)
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


def run_load(spec: dict) -> dict:
    """Run ``spec`` in a fresh load process on CPU 1, so the load never steals the tracker's core."""
    done = subprocess.run([sys.executable, "-c", WORKER, json.dumps(spec)],
                          capture_output=True, preexec_fn=lambda: pin_to(1))
    if done.returncode != 0:
        raise SystemExit(f"posswarm-bench tracker: the load process failed:\n{done.stderr.decode(errors='replace')}")
    return json.loads(done.stdout)


def pin_to(cpu: int) -> None:
    if hasattr(os, "sched_setaffinity") and cpu < os.cpu_count():
        os.sched_setaffinity(0, {cpu})


WORKER = "import sys; from tools.tracker_load import worker_main; sys.exit(worker_main(sys.argv[1]))"


def worker_main(spec: str) -> int:
    """The load process: run one load spec (JSON) and print its result as JSON."""
    gc.set_threshold(50_000, 20, 100)  # the load's own GC pauses would count as tracker latency
    print(json.dumps(trio.run(_load, json.loads(spec))))
    return 0
