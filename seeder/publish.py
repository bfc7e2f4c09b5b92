"""Publish a payload as a signed release: chunks, v2 torrent and manifest under RELEASES/NAME/VERSION."""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import shutil
import stat
import tempfile
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import blake3

from posswarm import logs
from posswarm.chunks import ChunkStore, chunk_relpath, cuts, pack
from posswarm.errors import PosswarmError
from posswarm.fsync import fsync_dir, fsync_file, write_synced
from posswarm.manifest import (
    ChunkRef,
    Manifest,
    PayloadFile,
    Targets,
    check_component,
    check_payload_path,
    safe_mode,
    sign_manifest,
)
from posswarm.release import MANIFEST_NAME, TORRENT_NAME, torrent_chunk_files, torrent_info_hashes
from posswarm.release_torrent import FileTree, file_tree, torrent
from posswarm.rollout import ROLLOUT_NAME
from seeder import oci

log = logs.get("publish")

STORE_DIR = ".chunks"  # central chunk store inside RELEASES; never a release name (names start alnum)
IMAGE_PATH = "image.bin"  # an image release's single payload file, whatever the source file was called
MIN_PIECE_SIZE = 16 * 1024  # BEP 52: v2 pieces are power-of-two multiples of 16 KiB blocks

# zstd gives up the GIL, so chunks compress on every core while the main thread cuts and hashes; the
# window bounds memory (at most this many chunks of at most CHUNK_MAX each wait to be written).
PACKERS = os.cpu_count() or 1
PACK_WINDOW = 64

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Publication:
    """What one publish did: the signed manifest, where it went, and how much was new."""

    manifest: Manifest
    path: Path
    chunks_new: int
    bytes_new: int
    seconds: float


@dataclass(frozen=True)
class _Source:
    path: Path  # on disk
    name: str  # POSIX path inside the payload
    mode: int
    size: int
    mtime_ns: int


def publish(payload: Path, **options) -> Manifest:
    """Publish ``payload`` (a file: kind image; a directory: kind app) and return its signed manifest.

    Takes the keyword options of publish_release().
    """
    return publish_release(payload, **options).manifest


def publish_release(
    payload: Path,
    *,
    name: str,
    version: str,
    private_key,
    out: Path,
    targets: Targets = Targets(),
    piece_size: int = 256 * 1024,
    progress: Progress | None = None,
    now: int | None = None,
    rollout_for: Callable[[Manifest], bytes] | None = None,
) -> Publication:
    """As publish(), also reporting how many chunks and bytes were new to the central store.

    ``progress(done, total)`` counts bytes of the payload cut (the torrent is hashed meanwhile).
    ``rollout_for(manifest)`` gives the first signed rollout.msgpack, written before the release appears.
    """
    started = time.monotonic()
    check_component(name, "release name")
    check_component(version, "release version")
    if piece_size < MIN_PIECE_SIZE or piece_size & (piece_size - 1):
        raise PosswarmError(f"piece size {piece_size}: not a power of two of at least 16 KiB (try 256 KiB)")
    _check_targets(targets)
    payload = Path(payload)
    kind, sources = _list_payload(payload)
    total = sum(s.size for s in sources)
    if total == 0:
        raise PosswarmError(f"payload {payload}: is empty (nothing to publish)")
    out = Path(out)
    final = out / name / version
    rid = f"{name} {version}"
    if final.exists():
        raise PosswarmError(f"release {rid}: {final} already exists (publish a new version instead)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".publish-{name}-{version}-", dir=out))
        tmp.chmod(0o755)  # mkdtemp makes it 0700; the published release must be readable like any file
    except OSError as exc:
        raise PosswarmError(f"releases dir {out}: cannot write to it ({exc.strerror}; check --out)") from None
    report = progress or (lambda done, total: None)
    created = int(time.time()) if now is None else now
    try:
        files, payload_b3, new, trees = _cut_payload(sources, tmp, ChunkStore(out / STORE_DIR), report, total,
                                                     piece_size)
        torrent = _make_torrent(trees, piece_size, created, rid)
        v1, v2 = torrent_info_hashes(torrent)
        manifest = Manifest(
            name=name, version=version, kind=kind, files=files, total_size=total,
            payload_blake3=payload_b3, info_hash_v1=v1, info_hash_v2=v2, piece_size=piece_size,
            targets=targets, created=created, key_id="0" * 16,
        )
        manifest = sign_manifest(manifest, private_key)
        Manifest.from_bytes(manifest.to_bytes())  # never publish what a device would refuse to parse
        expected = {chunk_relpath(c.digest) for c in manifest.unique_chunks()}
        if torrent_chunk_files(torrent) != expected:
            raise PosswarmError(f"release {rid}: the torrent's files are not the release's chunks (stray files in {tmp}?)")
        write_synced(tmp / TORRENT_NAME, torrent)
        write_synced(tmp / MANIFEST_NAME, manifest.to_bytes())
        if rollout_for is not None:
            # Inside the rename: a seeder must never see the release without its rollout (it would be ring all).
            write_synced(tmp / ROLLOUT_NAME, rollout_for(manifest))
        fsync_dir(tmp)
        final.parent.mkdir(exist_ok=True)
        try:
            # rename(2) onto an existing *empty* directory would replace it, so look once more.
            if final.exists():
                raise FileExistsError
            os.rename(tmp, final)
        except OSError:
            raise PosswarmError(f"release {rid}: {final} already exists (publish a new version instead)") from None
        fsync_dir(final.parent)
    except OSError as exc:
        raise PosswarmError(f"release {rid}: publishing failed: {exc.strerror or exc} ({exc.filename or out}; check disk space and permissions)") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    bytes_new = sum(size for size in new.values())
    result = Publication(manifest, final, len(new), bytes_new, time.monotonic() - started)
    log.info(
        "release.published", release=rid, kind=kind, bytes=total, chunks=len(manifest.unique_chunks()),
        chunks_new=len(new), bytes_new=bytes_new, seconds=round(result.seconds, 3),
    )
    return result


def _check_targets(targets: Targets) -> None:
    for what, values in (("store", targets.stores), ("device class", targets.device_classes)):
        if not values or not all(isinstance(v, str) and 0 < len(v) <= 256 for v in values):
            raise PosswarmError(f"targets: every {what} must be a non-empty name of at most 256 chars (got {list(values)!r})")
    if not isinstance(targets.ring, str) or not 0 < len(targets.ring) <= 64:
        raise PosswarmError(f"targets: ring {targets.ring!r} must be a non-empty name of at most 64 chars")


def _list_payload(payload: Path) -> tuple[str, list[_Source]]:
    try:
        st = payload.stat()
    except OSError as exc:
        raise PosswarmError(f"payload {payload}: cannot read it ({exc.strerror}; check the path)") from None
    if stat.S_ISREG(st.st_mode):
        return "image", [_Source(payload, IMAGE_PATH, safe_mode(st.st_mode), st.st_size, st.st_mtime_ns)]
    if not stat.S_ISDIR(st.st_mode):
        raise PosswarmError(f"payload {payload}: not a regular file or a directory")
    sources = []
    for dirpath, dirnames, filenames in os.walk(payload, onerror=_raise_walk_error):
        for entry in sorted(dirnames + filenames):
            path = Path(dirpath) / entry
            rel = path.relative_to(payload).as_posix()
            est = path.lstat()
            if stat.S_ISLNK(est.st_mode):
                raise PosswarmError(f"payload {payload}: {rel} is a symlink (symlinks are not published; copy the target in)")
            if stat.S_ISDIR(est.st_mode):
                continue
            if not stat.S_ISREG(est.st_mode):
                raise PosswarmError(f"payload {payload}: {rel} is not a regular file (remove it from the payload)")
            try:
                check_payload_path(rel)
            except PosswarmError as exc:
                raise PosswarmError(f"payload {payload}: {exc}") from None
            sources.append(_Source(path, rel, safe_mode(est.st_mode), est.st_size, est.st_mtime_ns))
    if not sources:
        raise PosswarmError(f"payload {payload}: is empty (nothing to publish)")
    sources.sort(key=lambda s: s.name)
    if oci.is_layout(payload):
        oci.check_layout(payload)
        return "oci", sources
    return "app", sources


def _raise_walk_error(exc: OSError) -> None:
    raise PosswarmError(f"payload {exc.filename}: cannot read it ({exc.strerror}; check permissions)")


def _cut_payload(
    sources: list[_Source], tmp: Path, store: ChunkStore, report: Progress, work: int, piece_size: int
) -> tuple[tuple[PayloadFile, ...], bytes, dict[bytes, int], dict[str, FileTree]]:
    """Cut every file once: chunk refs, the whole-payload BLAKE3, the chunks new to ``store``, the torrent's trees.

    New chunks are compressed, written and hashed for the torrent on every core while this thread cuts
    and hashes; at most a bounded window of chunks is in memory at once, whatever the payload's size.
    """
    whole = blake3.blake3()  # measured: threads do not help at ~1 MiB per update
    stored: dict[bytes, int] = {}  # every chunk of the payload: its stored size
    new: dict[bytes, int] = {}
    trees: dict[str, FileTree] = {}  # every stored chunk file's v2 hashes, by its path below chunks/
    cut_lists: list[tuple[_Source, list[tuple[bytes, int]]]] = []
    pending: deque[tuple[bytes, bool, Future]] = deque()
    made: set[str] = set()
    done = 0
    # Plain strings on the per-chunk path: building a Path for each of thousands of chunks cost more
    # than BLAKE3 of their bytes (py-spy of a 420 MiB publish).
    tmp_root, store_root = str(tmp), str(store.root)

    def write_next() -> None:
        digest, packed, work_done = pending.popleft()
        tree = work_done.result()
        trees[_in_torrent(digest)] = tree
        stored[digest] = tree.length
        if packed:
            new[digest] = tree.length

    with ThreadPoolExecutor(max_workers=PACKERS, thread_name_prefix="pack") as pool:
        for src in sources:
            lengths = []
            try:
                for cut in cuts(src.path):
                    whole.update(cut.data)
                    lengths.append((cut.digest, cut.length))
                    if cut.digest not in stored:
                        # The store's stored form, never a fresh one: one chunk, one file, in every release.
                        rel = chunk_relpath(cut.digest)
                        size = _size_of(f"{store_root}/{rel}")
                        dest = f"{tmp_root}/{rel}"
                        stored[cut.digest] = 0  # being packed or hashed
                        parent = dest[:dest.rindex("/")]
                        if parent not in made:
                            os.makedirs(parent, exist_ok=True)
                            made.add(parent)
                        if size is not None and size <= cut.length and _link_stored(store, cut.digest, size, tmp):
                            pending.append((cut.digest, False, pool.submit(_hash_file, dest, size, piece_size)))
                        else:
                            # The mmap's view, not a copy: the packing thread reads it once, compressing.
                            pending.append((cut.digest, True, pool.submit(_pack_into, dest, cut.data, piece_size)))
                        while len(pending) > PACK_WINDOW:
                            write_next()
                    done += cut.length
                    report(done, work)
                st = src.path.stat()
            except OSError as exc:
                raise PosswarmError(f"payload file {src.path}: cannot read it ({exc.strerror}; check permissions)") from None
            if (st.st_size, st.st_mtime_ns) != (src.size, src.mtime_ns) or sum(n for _, n in lengths) != src.size:
                raise PosswarmError(f"payload file {src.path}: changed while publishing (publish from a stable copy)")
            cut_lists.append((src, lengths))
        while pending:
            write_next()
        _sync_chunks(tmp, new)
        # link(2) gives up the GIL: the store's names are made on every core too, only once all are durable.
        for _ in pool.map(lambda digest: store.adopt(tmp / chunk_relpath(digest), digest), new, chunksize=64):
            pass
    files = tuple(PayloadFile(src.name, src.mode, src.size, tuple(ChunkRef(d, stored[d], n) for d, n in lengths))
                  for src, lengths in cut_lists)
    return files, whole.digest(), new, trees


def _in_torrent(digest: bytes) -> str:
    """A chunk file's path below the torrent's top directory (``chunks/``), as its file tree names it."""
    return chunk_relpath(digest).split("/", 1)[1]


def _pack_into(dest: str, content: memoryview, piece_size: int) -> FileTree:
    """Write chunk ``content`` in its stored form to ``dest``; the stored file's v2 hashes (and so its size).

    Runs on the packing threads, file and all: creating thousands of small files from the cutting
    thread left it waiting for the GIL (measured: 1.6 s of a 4.5 s publish of 128 MiB).
    One open(2) that creates the file or fails (the publish's own fresh directory), one write, no stat.
    No fsync here: all new chunks are synced together, before the store sees them.
    """
    data = pack(content)
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    return file_tree(data, piece_size)


def _hash_file(path: str, size: int, piece_size: int) -> FileTree:
    """The v2 hashes of a chunk file linked in from the store (already on disk: read it, on a packing thread)."""
    with open(path, "rb", buffering=0) as f:
        data = f.read(size + 1)
    if len(data) != size:  # the store's file changed under the publish: never hash a torrent file of another size
        raise OSError(errno.EIO, f"chunk file holds {len(data)} bytes, not {size}", path)
    return file_tree(data, piece_size)


def _size_of(path: str) -> int | None:
    """The size of the store's file ``path``, or None if it is absent (as ChunkStore.stored_size, without a Path)."""
    try:
        return os.stat(path).st_size
    except OSError:
        return None


def _link_stored(store: ChunkStore, digest: bytes, size: int, tmp: Path) -> bool:
    """Hard-link the store's chunk ``digest`` of ``size`` stored bytes into the fresh release directory ``tmp``.

    ``tmp`` is new and holds each chunk once, so one link(2) does it; anything unusual (a vanished
    chunk, no hard links here) goes the store's careful way.
    """
    rel = chunk_relpath(digest)
    try:
        os.link(f"{store.root}/{rel}", f"{tmp}/{rel}")
        return True
    except OSError:
        return store.link_into(digest, tmp, size)


def _sync_chunks(tmp: Path, new: dict[bytes, int]) -> None:
    """Make every new chunk file and its directory entry durable before the store links them.

    One syncfs(2) for the lot where the system has it: an fsync per file cost more than cutting,
    hashing and compressing together at 32 KiB chunks (measured: 3.3 s of a 7.6 s publish of 128 MiB).
    """
    if new and _syncfs(tmp):
        return
    for digest in new:
        fsync_file(tmp / chunk_relpath(digest))
    for sub in {(tmp / chunk_relpath(d)).parent for d in new}:
        fsync_dir(sub)


def _syncfs(path: Path) -> bool:
    """syncfs(2) the filesystem holding ``path``; False where libc has none (then fsync file by file)."""
    syncfs = getattr(_libc(), "syncfs", None)
    if syncfs is None:
        return False
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if syncfs(fd) != 0:  # since Linux 5.8 it reports write-back errors, as fsync does
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), str(path))
    finally:
        os.close(fd)
    return True


@functools.cache
def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _make_torrent(trees: dict[str, FileTree], piece_size: int, created: int, release_id: str) -> bytes:
    """The BitTorrent v2 torrent named ``chunks`` whose files are the release's chunk files.

    v2 only, not hybrid: a hybrid torrent pads every file to a piece boundary for its v1 half, and
    libtorrent sends the pad up to the end of the file's last 16 KiB block — about 8 KiB a chunk, 2.4 %
    of the WAN at 256 KiB chunks (measured; v2-only: 0 %). Every posswarm node is libtorrent 2.x, v2
    hashing is faster (notes/libtorrent.md §1), and ``info_hash_v1`` stays the SHA-1 of the info dict:
    the 20-byte key nodes and the tracker use.

    The info dict also carries ``posswarm release`` = "NAME VERSION": two versions with the same
    payload (a re-publish with new targets) must still be two torrents, two swarms, two info-hashes.
    The creation date is the manifest's time, so the same publish gives the same bytes.
    """
    return torrent(trees, name="chunks", piece_size=piece_size, created=created, creator="posswarm", private=True,
                   extra_info={b"posswarm release": release_id.encode()})
