"""/stats at 20,000 peers is summarized off the loop that answers announces: announces keep their pace meanwhile."""

import gc
import sys
import time
from functools import partial
from urllib.parse import quote_from_bytes

import httpx
import pytest
import trio

from tracker import server
from tracker.announce import Announce
from tracker.config import TrackerConfig
from tracker.peerstore import MemoryPeerStore

PEERS = 20_000
READERS = """
import sys, threading, urllib.request
def read():
    while True:
        urllib.request.urlopen(sys.argv[1] + "/stats").read()
for _ in range(3):
    threading.Thread(target=read, daemon=True).start()
threading.Event().wait()
"""


def filled_store(config: TrackerConfig, now: float) -> MemoryPeerStore:
    store = MemoryPeerStore(peer_ttl=config.effective_peer_ttl, retain=config.retain)
    for n in range(PEERS):
        store.record(Announce(info_hash=bytes([n % 50]) * 20, peer_id=b"-PS0100-%012d" % n, ip=f"10.{n // 250 % 250}"
                              f".{n % 250}.1", port=6881, uploaded=0, downloaded=0, left=n % 3, store=f"S{n // 40}",
                              role="device" if n % 40 else "cache", node=f"till-{n}", release=f"pos-os@{n % 50}",
                              size=1000, wan=0, lan=5, installed=n % 3 == 0), now)
    return store


async def timed_announce(till: httpx.AsyncClient, n: int) -> float:
    q = (f"info_hash={quote_from_bytes(bytes([n % 50]) * 20, safe='')}&peer_id=-PS0100-x{n:011d}"
         f"&port=7000&uploaded=0&downloaded=0&left=1&compact=1&node=t{n}&store=S1&role=device")
    t0 = time.monotonic()
    assert b"failure" not in (await till.get(f"/announce?{q}")).content
    return time.monotonic() - t0


@pytest.fixture
def tracker_gc():
    """The collector tuned as ``posswarm-tracker serve`` tunes it (tracker/cli.py), restored afterwards."""
    before = gc.get_threshold()
    gc.set_threshold(50_000, 20, 100)
    yield
    gc.set_threshold(*before)


async def until_closed(url: str, n: int) -> float:
    """Seconds from sending an announce with ``Connection: close`` to the end of the connection."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    t0 = time.monotonic()
    async with await trio.open_tcp_stream(host, int(port)) as stream:
        await stream.send_all(f"GET /announce?info_hash={'%01' * 20}&peer_id=-PS0100-c{n:011d}&port=7001&uploaded=0"
                              f"&downloaded=0&left=1 HTTP/1.1\r\nConnection: close\r\n\r\n".encode())
        while await stream.receive_some(65536):
            pass
    return time.monotonic() - t0


async def test_announces_are_not_held_up_by_stats_readers(nursery, tracker_gc):
    clock = time.time
    # a rebuild every stats_every (2 s) at most, however many readers
    config = TrackerConfig(port=0, open=True, open_stats=True)
    url = await nursery.start(lambda task_status: server.run(config, store=filled_store(config, clock()),
                                                             clock=clock, task_status=task_status))
    async with httpx.AsyncClient(base_url=url, timeout=30) as till:
        with trio.fail_after(30):
            started = time.monotonic()
            assert len((await till.get("/stats")).json()["releases"]) == 50
            one_summary = time.monotonic() - started
            quiet = [await timed_announce(till, n) for n in range(200)]
            latencies = []
            async with trio.open_nursery() as load:
                # Three readers in another process (their JSON parsing must not run on this loop, the tracker's).
                readers = await load.start(partial(trio.run_process, [sys.executable, "-c", READERS, url],
                                                   check=False))
                await trio.sleep(1)  # the readers' interpreter starting (a head start, not a wait for the tracker)
                latencies = [await timed_announce(till, n) for n in range(200)]
                # A connection the tracker closes must end at once: a snapshot child holding a copy of
                # its socket would keep it open (no FIN) until the child left.
                closed = [await until_closed(url, n) for n in range(20)]
                readers.terminate()
    latencies.sort()
    quiet.sort()
    # On the loop, every /stats request was a rebuild (one_summary, 0.1-2 s here) and held every announce behind it.
    assert latencies[100] < one_summary / 4 and latencies[198] < one_summary / 2, (one_summary, latencies[100::49])
    assert max(closed) < one_summary / 2, (one_summary, sorted(closed)[-3:])
    print(f"quiet p50 {quiet[100] * 1000:.1f} ms p99 {quiet[198] * 1000:.1f} ms; "
          f"one /stats summary {one_summary * 1000:.0f} ms; announce p50 {latencies[100] * 1000:.1f} ms, "
          f"p99 {latencies[198] * 1000:.1f} ms while 3 readers ask for /stats back to back")
