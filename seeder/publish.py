"""Publish a payload as a signed release: chunks, v2 torrent and manifest under RELEASES/NAME/VERSION."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from posswarm import logs
from posswarm.chunks import ChunkStore, chunk_relpath
from posswarm.errors import PosswarmError
from posswarm.fsync import fsync_dir, sync_tree
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
from posswarm.release_torrent import FileTree, torrent
from posswarm.rollout import ROLLOUT_NAME
from seeder import oci
from seeder.release_chunks import PACKERS, Cut, adopt_new, cut_payload

log = logs.get("publish")

STORE_DIR = ".chunks"  # central chunk store inside RELEASES; never a release name (names start alnum)
IMAGE_PATH = "image.bin"  # an image release's single payload file, whatever the source file was called
MIN_PIECE_SIZE = 16 * 1024  # BEP 52: v2 pieces are power-of-two multiples of 16 KiB blocks

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
    store = ChunkStore(out / STORE_DIR)
    try:
        with ThreadPoolExecutor(max_workers=PACKERS, thread_name_prefix="pack") as pool:
            cut = cut_payload([s.path for s in sources], tmp, store, report, total, piece_size, pool)
            files = _payload_files(sources, cut)
            torrent = _make_torrent(cut.trees, piece_size, created, rid)
            v1, v2 = torrent_info_hashes(torrent)
            manifest = Manifest(
                name=name, version=version, kind=kind, files=files, total_size=total,
                payload_blake3=cut.payload_blake3, info_hash_v1=v1, info_hash_v2=v2, piece_size=piece_size,
                targets=targets, created=created, key_id="0" * 16,
            )
            manifest = sign_manifest(manifest, private_key)
            Manifest.from_bytes(manifest.to_bytes())  # never publish what a device would refuse to parse
            expected = {chunk_relpath(c.digest) for c in manifest.unique_chunks()}
            if torrent_chunk_files(torrent) != expected:
                raise PosswarmError(f"release {rid}: the torrent's files are not the release's chunks (stray files in {tmp}?)")
            (tmp / TORRENT_NAME).write_bytes(torrent)
            (tmp / MANIFEST_NAME).write_bytes(manifest.to_bytes())
            if rollout_for is not None:
                # Inside the rename: a seeder must never see the release without its rollout (it would be ring all).
                (tmp / ROLLOUT_NAME).write_bytes(rollout_for(manifest))
            # Durable before named, named before visible. The chunk files, torrent and manifest were
            # written unsynced; one sync makes all of it durable (1). Only then does the store get its
            # names for the new chunks (2): it is trusted by size, so a name there for a chunk a crash
            # could lose would let a later publish link a torn file into a signed release. Only then is
            # the release renamed into place (3): the signed manifest never names a chunk a crash could
            # lose. tests/seeder/test_publish_durability.py holds a real publish's syscalls to this order.
            sync_tree(tmp)  # (1)
            for adopted in adopt_new(store, tmp, list(cut.new), pool):  # (2)
                adopted.result()
        final.parent.mkdir(exist_ok=True)
        try:
            # rename(2) onto an existing *empty* directory would replace it, so look once more.
            if final.exists():
                raise FileExistsError
            os.rename(tmp, final)  # (3)
        except OSError:
            raise PosswarmError(f"release {rid}: {final} already exists (publish a new version instead)") from None
        fsync_dir(final.parent)
    except OSError as exc:
        raise PosswarmError(f"release {rid}: publishing failed: {exc.strerror or exc} ({exc.filename or out}; check disk space and permissions)") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    bytes_new = sum(cut.new.values())
    result = Publication(manifest, final, len(cut.new), bytes_new, time.monotonic() - started)
    log.info(
        "release.published", release=rid, kind=kind, bytes=total, chunks=len(manifest.unique_chunks()),
        chunks_new=len(cut.new), bytes_new=bytes_new, seconds=round(result.seconds, 3),
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


def _payload_files(sources: list[_Source], cut: Cut) -> tuple[PayloadFile, ...]:
    """The manifest's files, once each source is known not to have changed while it was read."""
    files = []
    for src, chunks in zip(sources, cut.chunks, strict=True):
        try:
            st = src.path.stat()
        except OSError as exc:
            raise PosswarmError(f"payload file {src.path}: cannot read it ({exc.strerror}; check permissions)") from None
        if (st.st_size, st.st_mtime_ns) != (src.size, src.mtime_ns) or sum(n for _, n in chunks) != src.size:
            raise PosswarmError(f"payload file {src.path}: changed while publishing (publish from a stable copy)")
        files.append(PayloadFile(src.name, src.mode, src.size, tuple(ChunkRef(d, cut.stored[d], n) for d, n in chunks)))
    return tuple(files)


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
