"""``posswarm-bench tracker --certificates``: enrolled nodes announcing to posswarm-tracker over mutual TLS.

Central's keys are made as ``posswarm-seeder keys init`` makes them and ``--nodes`` tills are enrolled
(a real certificate each, 20 tills a store, one source address 127.0.x.y a store, as behind its
NAT). The tracker runs as a process pinned to CPU 0 with central's TLS certificate and the
enrolment CA (every announce placed by the certificate); the load is a process pinned to CPU 1:

* new handshake: every announce opens a connection, a full mutual TLS 1.3 handshake, one request,
  close (what every round cost while connections were dropped between rounds);
* kept: each client keeps its connection and announces on it back to back;
* idle: ``--idle`` connections, each after a handshake and one announce, held open and silent;
  the tracker's resident memory before and after is the price of keeping them (and the same over
  plain HTTP, ``idle_plain_http``: what TLS adds).

Tracker CPU per announce is its CPU time over the announces answered. ``fleet`` scales the two to
``--fleet-tills`` tills announcing every ``--interval`` s.
"""

from __future__ import annotations

import argparse
import datetime
import json
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote_from_bytes

import trio

from tools.bench_tracker import _free_port, _Tracker
from tools.lab import bin_path
from tools.tracker_load import peer_of, pin_to

TILLS_PER_STORE = 20
MAX_HEAD = 65536
WORKER = "import sys; from tools.bench_tracker_tls import worker_main; sys.exit(worker_main(sys.argv[1]))"


def _source(store: int) -> str:
    return f"127.0.{10 + store // 250}.{store % 250 + 1}"


def _announce(n: int, *, close: bool) -> bytes:
    # A certified till claims nothing: its certificate names its node, store and role.
    info_hash, peer_id, port = peer_of(n)
    q = (f"info_hash={quote_from_bytes(info_hash, safe='')}&peer_id={quote_from_bytes(peer_id, safe='')}"
         f"&port={port}&uploaded=0&downloaded=0&left=0&compact=1&numwant=50&installed=1")
    return (f"GET /announce?{q} HTTP/1.1\r\nHost: tracker\r\n" + ("Connection: close\r\n" if close else "")
            + "\r\n").encode()


class _Connection:
    """One till's mutual TLS connection to the tracker, and HTTP/1.1 requests on it."""

    def __init__(self, stream: trio.SSLStream) -> None:
        self.stream, self.buffer = stream, bytearray()

    @classmethod
    async def open(cls, host: str, port: int, context: ssl.SSLContext | None, source: str) -> _Connection:
        """``context`` None = plain HTTP (the idle baseline)."""
        tcp = await trio.open_tcp_stream(host, port, local_address=source)
        if context is None:
            return cls(tcp)
        stream = trio.SSLStream(tcp, context, server_hostname=host, https_compatible=True)
        await stream.do_handshake()
        return cls(stream)

    async def ask(self, request: bytes) -> bool:
        """True when the tracker answered 200 with a peer list (not a failure reason)."""
        await self.stream.send_all(request)
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            await self._more()
        head = bytes(self.buffer[:end]).lower()
        length = int(head.split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
        while len(self.buffer) < end + 4 + length:
            await self._more()
        body = bytes(self.buffer[end + 4:end + 4 + length])
        del self.buffer[:end + 4 + length]
        return head.startswith(b"http/1.1 200") and b"failure reason" not in body

    async def _more(self) -> None:
        data = await self.stream.receive_some(MAX_HEAD)
        if not data:
            raise EOFError("the tracker closed the connection")
        self.buffer += data

    async def close(self) -> None:
        try:
            await self.stream.aclose()
        except (OSError, trio.BrokenResourceError):
            pass  # the tracker closed first, as Connection: close asks


async def _load(spec: dict) -> dict:
    from cryptography import x509

    from posswarm.identity.credential import load_credential
    from posswarm.identity.tls import tracker_context

    authority = Path(spec["authority"])
    key = x509.load_pem_x509_certificate(authority.read_bytes()).public_key()
    now = datetime.datetime.now(datetime.UTC)
    contexts = [tracker_context(load_credential(Path(d), (key,), now=now), authority) for d in spec["credentials"]]
    host, port, mode = "127.0.0.1", spec["port"], spec["mode"]
    announces = failures = 0
    cpu = time.process_time()
    start = trio.current_time()
    deadline = start + spec["duration"]

    async def till(i: int) -> None:
        nonlocal announces, failures
        context, source = contexts[i % len(contexts)], _source(i // TILLS_PER_STORE)
        conn = None
        n = i
        while trio.current_time() < deadline:
            try:
                if conn is None:
                    conn = await _Connection.open(host, port, context, source)
                ok = await conn.ask(_announce(n, close=mode == "new"))
            except (OSError, EOFError, trio.BrokenResourceError, ValueError, IndexError):
                ok, conn = False, None
            if mode == "new" and conn is not None:
                await conn.close()
                conn = None
            announces += ok
            failures += not ok
            n += spec["clients"]

    async def idle(i: int, opened: list) -> None:
        nonlocal failures
        try:
            context = None if spec.get("plain") else contexts[i % len(contexts)]
            conn = await _Connection.open(host, port, context, _source(i // TILLS_PER_STORE))
            if await conn.ask(_announce(i, close=False)):
                opened.append(conn)
                return
        except (OSError, EOFError, trio.BrokenResourceError, ValueError, IndexError):
            pass
        failures += 1

    if mode == "idle":
        opened: list[_Connection] = []
        with trio.fail_after(spec["duration"]):
            limit = trio.CapacityLimiter(64)  # the handshakes at a pace the tracker answers, not a SYN flood

            async def paced(i: int) -> None:
                async with limit:
                    await idle(i, opened)

            async with trio.open_nursery() as nursery:
                for i in range(spec["clients"]):
                    nursery.start_soon(paced, i)
        print(json.dumps({"opened": len(opened), "failures": failures}), flush=True)
        await trio.to_thread.run_sync(sys.stdin.read)  # held until the bench has read the tracker's memory
        return {}
    async with trio.open_nursery() as nursery:
        for i in range(spec["clients"]):
            nursery.start_soon(till, i)
    elapsed = trio.current_time() - start
    return {"announces": announces, "failures": failures, "seconds": round(elapsed, 2),
            "per_second": round(announces / elapsed), "load_cpu_percent": round(100 * (time.process_time() - cpu) / elapsed)}


def worker_main(spec: str) -> int:
    """The load process: run one phase (JSON spec) and print its result as JSON."""
    result = trio.run(_load, json.loads(spec))
    if result:
        print(json.dumps(result))
    return 0


def _worker(spec: dict, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WORKER, json.dumps(spec)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, preexec_fn=lambda: pin_to(1), **popen)


def _phase(tracker: _Tracker, spec: dict) -> dict:
    cpu = tracker.cpu_seconds()
    worker = _worker(spec)
    out, err = worker.communicate(timeout=spec["duration"] + 120)
    if worker.returncode != 0:
        raise SystemExit(f"posswarm-bench tracker --certificates: the load process failed:\n{err.decode(errors='replace')}")
    result = json.loads(out)
    used = tracker.cpu_seconds() - cpu
    result["tracker_cpu_percent"] = round(100 * used / result["seconds"])
    result["tracker_cpu_us_per_announce"] = round(1e6 * used / max(result["announces"], 1))
    return result


def _idle(tracker: _Tracker, spec: dict) -> dict:
    before = tracker.rss()
    worker = _worker(spec, stdin=subprocess.PIPE)
    line = worker.stdout.readline()  # printed once every connection is open and has announced
    time.sleep(1)  # the tracker's last handshakes' buffers settle before its memory is read
    after = tracker.rss()
    worker.communicate(b"", timeout=60)
    if not line:
        raise SystemExit("posswarm-bench tracker --certificates: the idle load process failed")
    held = json.loads(line)
    return {**held, "rss_growth_bytes": after - before,
            "bytes_per_connection": round((after - before) / max(held["opened"], 1))}


def _start(workdir: Path, keys, connections: int, *, plain: bool = False) -> _Tracker:
    http = _free_port(socket.SOCK_STREAM)
    cert, key = keys.issue_tls(["127.0.0.1"])
    config = workdir / "tracker.toml"
    tls = "plain_http = true\n" if plain else (f'tls_cert = "{cert}"\ntls_key = "{key}"\n'
                                                f'node_ca = "{keys.authority}"\n')
    # Slots and idle time raised for the idle phase: the point is what each held connection costs, however long
    # opening them all takes on a loaded machine.
    config.write_text(f'listen = "127.0.0.1:{http}"\nopen = true\nopen_stats = true\n{tls}'
                      f'max_connections = {connections}\nidle_timeout = 600\n')
    return _Tracker("posswarm-tracker", [bin_path("posswarm-tracker"), "serve", "--config", str(config),
                                         "--log-level", "error"], http, 0)


def bench(args) -> dict:
    from seeder.keys_cli import init_keys

    with tempfile.TemporaryDirectory(prefix="bench-tracker-tls-") as tmp:
        workdir = Path(tmp)
        keys = init_keys(workdir / "keys", workdir / "releases")
        credentials = [str(keys.enrol(workdir / "nodes" / f"till-{i:04d}", node_id=f"till-{i:04d}",
                                      store=f"S{i // TILLS_PER_STORE:04d}", role="device", device_class="pos"))
                       for i in range(args.nodes)]
        base = {"port": 0, "authority": str(keys.authority), "credentials": credentials,
                "clients": args.connections, "duration": args.duration}
        tracker = _start(workdir, keys, args.idle + 1024)
        try:
            base["port"] = tracker.http
            _phase(tracker, {**base, "mode": "kept", "duration": 1.0})  # warm-up: code paths hot
            result = {"nodes": args.nodes, "clients": args.connections,
                      "new_handshake": _phase(tracker, {**base, "mode": "new"}),
                      "kept": _phase(tracker, {**base, "mode": "kept"})}
        finally:
            tracker.stop()
        for phase, plain in (("idle", False), ("idle_plain_http", True)):
            tracker = _start(workdir, keys, args.idle + 1024, plain=plain)  # fresh: its memory holds the idle ones
            try:
                base["port"] = tracker.http
                result[phase] = _idle(tracker, {**base, "mode": "idle", "clients": args.idle, "duration": 300.0,
                                                "plain": plain})
            finally:
                tracker.stop()
    per_second = args.fleet_tills / args.interval
    held = args.fleet_tills * result["idle"]["bytes_per_connection"]
    result["fleet"] = {
        "tills": args.fleet_tills, "interval_s": args.interval, "announces_per_second": round(per_second),
        "cores_new_handshake": round(per_second * result["new_handshake"]["tracker_cpu_us_per_announce"] / 1e6, 2),
        "cores_kept": round(per_second * result["kept"]["tracker_cpu_us_per_announce"] / 1e6, 2),
        "gib_kept_connections": round(held / 2**30, 2),
    }
    return result


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nodes", type=int, default=200, help="--certificates: tills enrolled, a certificate each (default 200)")
    p.add_argument("--idle", type=int, default=5000,
                   help="--certificates: idle kept connections whose memory is measured (default 5000)")
    p.add_argument("--fleet-tills", type=int, default=100_000,
                   help="--certificates: tills of the fleet figure (default 100000)")
    p.add_argument("--interval", type=int, default=30, help="--certificates: the fleet's announce interval (default 30)")
