"""Standard clients nobody here wrote: aria2c and transmission-cli swap a mktorrent torrent through our tracker.

HTTP: aria2c seeds, transmission-cli downloads. UDP (BEP 15): transmission-cli seeds, aria2c downloads.
Each run ends with the tracker's scrape agreeing with what happened: two seeds, one completed download.
"""

import os
import shutil
import socket
import struct
import subprocess
from pathlib import Path

import fastbencode
import httpx
import pytest
import trio

from tracker import server, udp_server, udp_wire
from tracker.access import Access
from tracker.config import TrackerConfig
from tracker.desk import Desk
from tracker.peerstore import MemoryPeerStore

pytestmark = pytest.mark.skipif(
    not all(shutil.which(tool) for tool in ("aria2c", "transmission-cli", "mktorrent")),
    reason="needs the Debian packages aria2, transmission-cli and mktorrent (CI installs them)",
)


class Recorder(MemoryPeerStore):
    """The real store, plus a wake-up per recorded announce so the test waits on events, not sleeps."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.changed = trio.Event()
        self.seen = []

    def record(self, announce, now):
        super().record(announce, now)
        self.seen.append(announce)
        self.changed.set()

    async def until(self, predicate):
        while not any(predicate(a) for a in self.seen):
            self.changed = trio.Event()
            await self.changed.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_torrent(tmp_path: Path, announce: str) -> tuple[Path, Path, bytes]:
    seed_dir = tmp_path / "seed"
    seed_dir.mkdir()
    payload = os.urandom(300_000)
    (seed_dir / "pos-app.bin").write_bytes(payload)
    torrent = tmp_path / "pos-app.torrent"
    subprocess.run(["mktorrent", "-l", "15", "-a", announce, "-o", str(torrent), str(seed_dir / "pos-app.bin")],
                   check=True, capture_output=True)
    return torrent, seed_dir, payload


def info_hash(torrent: Path) -> bytes:
    import hashlib

    return hashlib.sha1(fastbencode.bencode(fastbencode.bdecode(torrent.read_bytes())[b"info"])).digest()


def aria2c(torrent: Path, directory: Path, port: int) -> list[str]:
    # aria2 sends UDP tracker requests from its DHT socket, so DHT is on, on a loopback port, with its
    # own empty routing table (no entry points): it reaches nobody but the tracker.
    return ["aria2c", f"--dir={directory}", f"--listen-port={port}", "--enable-dht=true", f"--dht-listen-port={port}",
            f"--dht-file-path={directory / 'dht.dat'}", "--enable-dht6=false",
            "--bt-enable-lpd=false", "--enable-peer-exchange=false", "--seed-ratio=0.0", "--check-integrity=true",
            "--bt-tracker-connect-timeout=5", "--bt-tracker-timeout=5", "--summary-interval=0",
            "--console-log-level=warn", "--quiet=true", str(torrent)]


def transmission(torrent: Path, directory: Path, port: int, config_dir: Path) -> list[str]:
    config_dir.mkdir()
    (config_dir / "settings.json").write_text(
        '{"dht-enabled": false, "lpd-enabled": false, "pex-enabled": false, "utp-enabled": false,'
        ' "port-forwarding-enabled": false, "peer-port-random-on-start": false}')
    return ["transmission-cli", "-g", str(config_dir), "-p", str(port), "-w", str(directory), "-M", str(torrent)]


async def swap(nursery, store, seeder_cmd, leecher_cmd, h, logs: Path):
    """Start the seeder, wait until the tracker knows it is complete, then the leecher; wait for its 'completed'."""
    procs = []
    for name, cmd in (("seeder", seeder_cmd), ("leecher", leecher_cmd)):
        out = open(logs / f"{name}.log", "wb")
        procs.append(await trio.lowlevel.open_process(cmd, stdout=out, stderr=subprocess.STDOUT,
                                                      stdin=subprocess.DEVNULL))
        out.close()
        if name == "seeder":
            await store.until(lambda a: a.info_hash == h and a.left == 0)
    await store.until(lambda a: a.info_hash == h and a.event == "completed")
    return procs


async def stop_all(procs):
    for p in procs:
        if p.returncode is None:
            p.kill()
        with trio.CancelScope(shield=True):
            await p.wait()


async def test_aria2c_seeds_transmission_downloads_over_http(nursery, tmp_path):
    store = Recorder(peer_ttl=90, retain=1000)
    url = await nursery.start(lambda task_status: server.run(
        TrackerConfig(port=0, open=True, open_stats=True, interval=5, min_interval=1), store=store, task_status=task_status))
    torrent, seed_dir, payload = make_torrent(tmp_path, f"{url}/announce")
    h = info_hash(torrent)
    download = tmp_path / "download"
    download.mkdir()
    procs = []
    try:
        with trio.fail_after(60):
            procs = await swap(nursery, store, aria2c(torrent, seed_dir, free_port()),
                               transmission(torrent, download, free_port(), tmp_path / "tr"), h, tmp_path)
            async with httpx.AsyncClient() as client:
                scrape = fastbencode.bdecode((await client.get(f"{url}/scrape")).content)
    finally:
        await stop_all(procs)
    assert (download / "pos-app.bin").read_bytes() == payload
    assert scrape[b"files"][h] == {b"complete": 2, b"incomplete": 0, b"downloaded": 1}


async def test_transmission_seeds_aria2c_downloads_over_udp(nursery, tmp_path):
    store = Recorder(peer_ttl=90, retain=1000)
    config = TrackerConfig(open=True, interval=5, min_interval=1)
    udp_host, udp_port = await nursery.start(lambda task_status: udp_server.run(
        Desk(config, store, Access(open=True)), "127.0.0.1", 0, trio.current_time, task_status=task_status))
    torrent, seed_dir, payload = make_torrent(tmp_path, f"udp://{udp_host}:{udp_port}/announce")
    h = info_hash(torrent)
    download = tmp_path / "download"
    download.mkdir()
    procs = []
    try:
        with trio.fail_after(60):
            procs = await swap(nursery, store, transmission(torrent, seed_dir, free_port(), tmp_path / "tr"),
                               aria2c(torrent, download, free_port()), h, tmp_path)
            scrape = await udp_scrape((udp_host, udp_port), h)
    finally:
        await stop_all(procs)
    assert (download / "pos-app.bin").read_bytes() == payload
    assert scrape == (2, 1, 0)  # seeders, completed, leechers


async def udp_scrape(tracker, h) -> tuple[int, int, int]:
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        await sock.bind(("127.0.0.1", 0))
        await sock.sendto(struct.pack(">QII", udp_wire.PROTOCOL_ID, 0, 1), tracker)
        _, _, cid = struct.unpack(">IIQ", (await sock.recvfrom(64))[0])
        await sock.sendto(struct.pack(">QII", cid, 2, 2) + h, tracker)
        reply = (await sock.recvfrom(64))[0]
    action, tid, seeders, completed, leechers = struct.unpack(">IIIII", reply)
    assert (action, tid) == (2, 2)
    return seeders, completed, leechers
