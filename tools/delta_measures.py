"""What ``posswarm-bench delta`` measures, one function a figure: wire bytes of a release and of an update,
a real libtorrent transfer, casync's store, zstd of the whole image, the dd rate, decode speed, the sweep."""

from __future__ import annotations

import os
import random
import shutil
import struct
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import blake3
import libtorrent as lt
import zstandard
from pyfastcdc import FastCDC

from posswarm.chunks import CHUNK_AVG, CHUNK_MAX, CHUNK_MIN, ZSTD_LEVEL, chunk_relpath, read_content
from posswarm.errors import PosswarmError
from posswarm.manifest import Manifest
from posswarm.release import MANIFEST_NAME, TORRENT_NAME

MiB = 1 << 20
SWEEP_SIZES = ((64 << 10, 256 << 10, 1 << 20), (32 << 10, 128 << 10, 512 << 10), (16 << 10, 64 << 10, 256 << 10),
               (16 << 10, 48 << 10, 192 << 10), (8 << 10, 32 << 10, 128 << 10))
SWEEP_LEVELS = (1, 3, 6)


def wire_of_release(release_dir: Path, previous: Path | None = None) -> dict:
    """Bytes a node fetches for ``release_dir``'s torrent, holding ``previous`` (or nothing), from the directories."""
    m = _manifest(release_dir)
    held = {c.digest for c in _manifest(previous).unique_chunks()} if previous else set()
    lacking = [c for c in m.unique_chunks() if c.digest not in held]
    return {"chunks": len(lacking), "stored": sum(c.size for c in lacking), "content": sum(c.length for c in lacking),
            "metadata": (release_dir / MANIFEST_NAME).stat().st_size + (release_dir / TORRENT_NAME).stat().st_size,
            "all_chunks": len(m.unique_chunks())}


def _manifest(release_dir: Path) -> Manifest:
    return Manifest.from_bytes((release_dir / MANIFEST_NAME).read_bytes())


def decode_rate(release_dir: Path) -> float:
    """MB/s of content one core reads, decodes and BLAKE3-verifies over the release's chunks (as a device does)."""
    m = _manifest(release_dir)
    started = time.process_time()
    for c in m.unique_chunks():
        if blake3.blake3(read_content(release_dir / chunk_relpath(c.digest), c.size, c.length)).digest() != c.digest:
            raise PosswarmError(f"release {m.release_id}: chunk {c.hex} does not verify (the benchmark is broken)")
    return sum(c.length for c in m.unique_chunks()) / max(time.process_time() - started, 1e-9) / 1e6


def transfer(torrent: bytes, seed_dir: Path, fetch_dir: Path, *, timeout_s: float = 600.0) -> dict:
    """Fetch ``torrent`` from a libtorrent seeding ``seed_dir`` into ``fetch_dir`` on loopback: seconds and bytes.

    Whatever ``fetch_dir`` already holds is checked first and not fetched, as a node's linked chunks are not.
    """
    settings = {"enable_dht": False, "enable_lsd": False, "enable_upnp": False, "enable_natpmp": False,
                "alert_mask": lt.alert.category_t.status_notification | lt.alert.category_t.piece_progress_notification,
                "allow_multiple_connections_per_ip": True}
    sessions, handles = [], []
    for address, where in (("127.0.14.1", seed_dir), ("127.0.14.2", fetch_dir)):
        ses = lt.session({**settings, "listen_interfaces": f"{address}:0"})
        atp = lt.load_torrent_buffer(torrent)
        atp.save_path = str(where)
        sessions.append(ses)
        handles.append(ses.add_torrent(atp))
    seeding, fetching = handles
    deadline = time.monotonic() + timeout_s

    def until(done, what: str) -> None:
        while not done():  # on libtorrent's alerts, never a sleep
            if time.monotonic() > deadline:
                raise PosswarmError(f"loopback transfer: {what} within {timeout_s:.0f} s (is the machine overloaded?)")
            for ses in sessions:
                ses.wait_for_alert(50)
                ses.pop_alerts()

    until(lambda: seeding.status().is_seeding, "the seeder did not find its files complete")
    until(lambda: fetching.status().state != lt.torrent_status.checking_files and fetching.status().has_metadata,
          "the fetching side did not check its files")
    started, cpu = time.monotonic(), time.process_time()
    fetching.connect_peer(("127.0.14.1", sessions[0].listen_port()))
    until(lambda: fetching.status().is_seeding, "the fetching side did not complete")
    status = fetching.status()
    return {"seconds": time.monotonic() - started, "cpu_seconds": time.process_time() - cpu,
            "payload_download": status.total_payload_download, "failed": status.total_failed_bytes}


def torrent_cost(release_dir: Path, workdir: Path) -> list[dict]:
    """Does a torrent of thousands of small chunk files cost libtorrent anything? The release's chunk files,
    then the same bytes packed into 1 MiB files: torrent size, hashing time, loopback transfer."""
    packed = workdir / "packed" / "chunks"
    packed.mkdir(parents=True)
    out, n = None, 0
    for path in sorted((release_dir / "chunks").rglob("*")):
        if path.is_file():
            if out is None or out.tell() >= MiB:
                out = open(packed / f"{n:06d}", "wb")
                n += 1
            out.write(path.read_bytes())
    rows = []
    for what, root in (("chunk files", release_dir), ("packed into 1 MiB files", packed.parent)):
        files = lt.list_files(str(root / "chunks"))  # as publish builds a release's torrent
        total = sum(p.stat().st_size for p in (root / "chunks").rglob("*") if p.is_file())
        started = time.monotonic()
        ct = lt.create_torrent(files, 256 * 1024, flags=lt.create_torrent.v2_only)
        lt.set_piece_hashes(ct, str(root))
        torrent = lt.bencode(ct.generate())
        hashed = time.monotonic() - started
        fetch = workdir / f"fetch-{len(rows)}"
        moved = transfer(torrent, root, fetch)
        rows.append({"what": what, "files": len(files), "bytes": total, "torrent": len(torrent),
                     "hash_seconds": round(hashed, 2), "transfer_seconds": round(moved["seconds"], 2),
                     "transfer_mbs": round(total / moved["seconds"] / 1e6, 1),
                     "cpu_seconds": round(moved["cpu_seconds"], 2)})
        shutil.rmtree(fetch)
    shutil.rmtree(packed.parent)
    return rows


def dd_seconds(image: Path, scratch: Path) -> float:
    """Seconds for ``dd ... conv=fsync`` to copy ``image`` (the machine's durable write rate, read included)."""
    out = scratch / "dd.out"
    os.sync()  # not the images just built: their write-back made dd 107 MB/s where a quiet disk gave 336-1,100
    started = time.monotonic()
    subprocess.run(["dd", f"if={image}", f"of={out}", "bs=1M", "conv=fsync", "status=none"], check=True)
    seconds = time.monotonic() - started
    out.unlink()
    return seconds


def casync_store(image: Path, index: Path, store: Path) -> tuple[set[Path], float]:
    """Chunk files ``casync make`` leaves in ``store`` for ``image`` (default sizes, zstd), and its seconds."""
    started = time.monotonic()
    done = subprocess.run(["casync", "make", "--compression=zstd", f"--store={store}", str(index), str(image)],
                          capture_output=True, text=True)
    if done.returncode:
        raise PosswarmError(f"casync make {image}: failed ({done.stderr.strip()[-200:]})")
    return set(store.rglob("*.cacnk")), time.monotonic() - started


CA_FORMAT_INDEX = 0x96824D9C7B129FF9  # casync's src/caformat.h
CA_INDEX_HEADER = 48 + 16  # the index header, then the table header; then (end offset, id) items of 40 bytes


def casync_contents(index: Path) -> dict[str, int]:
    """Each chunk of a casync blob index (``.caibx``): its id in hex (its ``.cacnk`` name) and its content length.

    Compressed sizes say nothing of what a chunk holds: this is what tells chunking from compression.
    """
    data = index.read_bytes()
    if len(data) < CA_INDEX_HEADER or struct.unpack_from("<Q", data, 8)[0] != CA_FORMAT_INDEX:
        raise PosswarmError(f"casync index {index}: not a blob index (was casync's format changed?)")
    chunks, start = {}, 0
    for at in range(CA_INDEX_HEADER, len(data) - 39, 40):
        (end,) = struct.unpack_from("<Q", data, at)
        if end <= start:  # the table's tail begins with zeros
            break
        chunks[data[at + 8:at + 40].hex()] = end - start
        start = end
    return chunks


def zstd_size(image: Path) -> int:
    """Bytes of ``zstd -3`` of the whole image, one thread: the best a whole-image download could do."""
    proc = subprocess.Popen(["zstd", "-3", "-T1", "-q", "-c", str(image)], stdout=subprocess.PIPE)
    total = 0
    while block := proc.stdout.read(1 << 20):
        total += len(block)
    proc.wait()
    return total


def random_pair(workdir: Path, size: int) -> tuple[Path, Path, int]:
    """Random bytes and the same with 5 % replaced in three regions (as the older benchmarks change them)."""
    v1, v2 = workdir / "random-v1.img", workdir / "random-v2.img"
    rng = random.Random(14)
    with open(v1, "wb") as f:
        for _ in range(0, size, MiB):
            f.write(rng.randbytes(MiB))
    shutil.copyfile(v1, v2)
    region = size // 60
    with open(v2, "r+b") as f:
        for start in (size // 10, size // 2, size * 4 // 5):
            f.seek(start)
            f.write(rng.randbytes(region))
    return v1, v2, 3 * region


def sweep(v1: Path, updates: dict[str, Path]) -> list[dict]:
    """For each FastCDC size (at the pinned level) and each zstd level (at the chosen sizes): bytes on the wire."""
    rows = []
    for sizes in SWEEP_SIZES:
        rows.append({"min": sizes[0], "avg": sizes[1], "max": sizes[2], "level": ZSTD_LEVEL,
                     **_wire_for(v1, updates, sizes, ZSTD_LEVEL)})
    for level in SWEEP_LEVELS:
        if level != ZSTD_LEVEL:
            rows.append({"min": CHUNK_MIN, "avg": CHUNK_AVG, "max": CHUNK_MAX, "level": level,
                         **_wire_for(v1, updates, (CHUNK_MIN, CHUNK_AVG, CHUNK_MAX), level, updates_too=False)})
    return rows


def _wire_for(v1: Path, updates: dict[str, Path], sizes, level: int, *, updates_too: bool = True) -> dict:
    cdc = FastCDC(sizes[1], min_size=sizes[0], max_size=sizes[2])
    pool = ThreadPoolExecutor(os.cpu_count() or 1)

    def stored(path: Path, skip: set[bytes]) -> tuple[int, int, set[bytes], float]:
        seen, jobs = set(skip), []
        started = time.monotonic()
        for c in cdc.cut_file(str(path)):
            d = blake3.blake3(c.data).digest()
            if d not in seen:
                seen.add(d)
                jobs.append(pool.submit(_stored_size, bytes(c.data), level))
        total = sum(j.result() for j in jobs)
        return total, len(jobs), seen - skip, time.monotonic() - started

    full, chunks, digests, seconds = stored(v1, set())
    row = {"full": full, "chunks": chunks, "pack_mbs": round(v1.stat().st_size / seconds / 1e6, 1)}
    if updates_too:
        for kind, v2 in updates.items():
            row[kind] = stored(v2, digests)[0]
    pool.shutdown()
    return row


_compressors = threading.local()


def _stored_size(data: bytes, level: int) -> int:
    """What posswarm.chunks.pack would store for ``data`` at zstd ``level`` (one compressor per thread)."""
    by_level = _compressors.__dict__.setdefault("by_level", {})
    if level not in by_level:
        by_level[level] = zstandard.ZstdCompressor(level=level, write_content_size=True, write_checksum=False)
    return min(len(by_level[level].compress(data)), len(data))
