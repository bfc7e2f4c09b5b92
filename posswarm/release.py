"""A release directory on disk (manifest, torrent, chunks) and the checks that make it trustworthy."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

import blake3
import fastbencode

from posswarm.chunks import ChunkError, chunk_relpath, read_content
from posswarm.errors import PosswarmError
from posswarm.manifest import ChunkRef, Manifest, verify_manifest

MANIFEST_NAME = "manifest.msgpack"
TORRENT_NAME = "release.torrent"
# Every place that reads a release.torrent bounds it by this. Measured (v2-only, 256 KiB pieces): ~215
# bytes per chunk, file-tree entry plus piece layers, so a 4 GiB image (~16k chunks of 256 KiB on average)
# has a ~3.5 MB torrent, and even all-minimum 64 KiB chunks (~65k) stay near 10 MB. 64 MiB leaves room for
# images of ~25 GiB at worst-case chunking while keeping a hostile server from making a node buffer and
# parse hundreds of MiB of bencode.
MAX_TORRENT_BYTES = 64 * 1024 * 1024


class ReleaseError(PosswarmError):
    """A release directory or torrent that is malformed or does not match its manifest."""


def _decode_torrent(torrent_bytes: bytes) -> dict:
    if not isinstance(torrent_bytes, bytes) or len(torrent_bytes) > MAX_TORRENT_BYTES:
        raise ReleaseError("torrent: not bytes or larger than the limit (not a release torrent?)")
    try:
        top = fastbencode.bdecode(torrent_bytes)
        # Re-encoding must give the same bytes, so hashing the re-encoded info dict is hashing the original.
        canonical = fastbencode.bencode(top) == torrent_bytes
    except Exception as exc:  # fastbencode raises ValueError, TypeError, RecursionError... on garbage
        raise ReleaseError(f"torrent: not valid bencode ({type(exc).__name__}; re-download it)") from None
    if not canonical:
        raise ReleaseError("torrent: not canonical bencode (re-encoded or tampered; re-download it)")
    if not isinstance(top, dict) or not isinstance(top.get(b"info"), dict):
        raise ReleaseError("torrent: has no info dict (not a torrent file)")
    return top


def torrent_info_hashes(torrent_bytes: bytes) -> tuple[bytes, bytes]:
    """(v1 SHA-1, v2 SHA-256) of the bencoded info dict (BEP 3, BEP 52)."""
    info = fastbencode.bencode(_decode_torrent(torrent_bytes)[b"info"])
    return hashlib.sha1(info).digest(), hashlib.sha256(info).digest()


def _walk_tree(tree, prefix: list[str], out: dict, field: bytes = b"length", kind: type = int) -> None:
    # Our trees are 3 deep (chunks/<h[:2]>/<h>); the cap keeps garbage from exhausting Python's stack.
    if not isinstance(tree, dict) or len(prefix) > 32:
        raise ReleaseError("torrent: malformed file tree (re-download it)")
    for key, sub in tree.items():
        if key == b"":
            value = sub.get(field) if isinstance(sub, dict) else None
            if not isinstance(value, kind) or not prefix:
                raise ReleaseError("torrent: malformed file tree entry (re-download it)")
            out["/".join(prefix)] = value
        else:
            _walk_tree(sub, prefix + [key.decode("utf-8", "replace")], out, field, kind)


def torrent_chunk_sizes(torrent_bytes: bytes) -> dict[str, int]:
    """{path: length} of the torrent's real (non-pad) files, paths including the torrent name."""
    info = _decode_torrent(torrent_bytes)[b"info"]
    name = info.get(b"name")
    if not isinstance(name, bytes):
        raise ReleaseError("torrent: info dict has no name (not a torrent file)")
    root = name.decode("utf-8", "replace")
    v1: dict[str, int] | None = None
    if b"files" in info:
        v1 = {}
        files = info[b"files"]
        if not isinstance(files, list):
            raise ReleaseError("torrent: malformed file list (re-download it)")
        for f in files:
            if not isinstance(f, dict) or not isinstance(f.get(b"path"), list) or not isinstance(f.get(b"length"), int):
                raise ReleaseError("torrent: malformed file list entry (re-download it)")
            attr = f.get(b"attr", b"")
            if isinstance(attr, bytes) and b"p" in attr:
                continue  # BEP 47 pad file, only there to align v1 pieces with v2 files
            parts = [p.decode("utf-8", "replace") if isinstance(p, bytes) else "?" for p in f[b"path"]]
            v1["/".join([root, *parts])] = f[b"length"]
    elif b"length" in info:
        v1 = {root: info[b"length"]}
    v2: dict[str, int] | None = None
    if b"file tree" in info:
        v2 = {}
        _walk_tree(info[b"file tree"], [root], v2)
    if v1 is not None and v2 is not None and v1 != v2:
        raise ReleaseError("torrent: v1 file list and v2 file tree disagree (re-download it)")
    files = v2 if v2 is not None else v1
    if files is None:
        raise ReleaseError("torrent: info dict lists no files (not a torrent file)")
    return files


def torrent_chunk_roots(torrent_bytes: bytes) -> dict[str, bytes]:
    """{chunk file name (its BLAKE3 in hex): its BEP 52 ``pieces root``} of a v2 torrent."""
    roots: dict[str, bytes] = {}
    _walk_tree(_decode_torrent(torrent_bytes)[b"info"].get(b"file tree"), [], roots, b"pieces root", bytes)
    return {path.rpartition("/")[2]: root for path, root in roots.items()}


def torrent_chunk_files(torrent_bytes: bytes) -> set[str]:
    """The torrent's non-pad file paths, e.g. ``chunks/3f/3fa2...``."""
    return set(torrent_chunk_sizes(torrent_bytes))


def wire_size(release_dir: Path) -> int:
    """Bytes a node holding none of the release's chunks fetches: its stored (compressed) chunk files."""
    return sum(torrent_chunk_sizes((Path(release_dir) / TORRENT_NAME).read_bytes()).values())


def torrent_piece_size(torrent_bytes: bytes) -> int:
    size = _decode_torrent(torrent_bytes)[b"info"].get(b"piece length")
    if not isinstance(size, int):
        raise ReleaseError("torrent: info dict has no piece length (not a torrent file)")
    return size


def chunk_problem(ref: ChunkRef, root: Path) -> str | None:
    """Why chunk ``ref`` under ``root`` is unusable ("missing", "...size...", "corrupt ..."), or None if good.

    libtorrent has checked the stored bytes against the torrent's SHA-256 tree; this checks what they
    decode to: a frame of exactly the manifest's length whose content has the chunk's BLAKE3.
    """
    path = Path(root) / chunk_relpath(ref.digest)
    try:
        size = path.stat().st_size
        if size != ref.size:
            return f"has {size} bytes, not {ref.size}"
        content = read_content(path, ref.size, ref.length)
    except FileNotFoundError:
        return "is missing"
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    except ChunkError as exc:
        return f"is corrupt (it {exc})"
    if blake3.blake3(content).digest() != ref.digest:
        return "is corrupt (BLAKE3 mismatch)"
    return None


def sizes_match(manifest: Manifest, directory: Path) -> bool:
    """Every chunk file is there with its manifest size (a stat each: cheap, unlike hashing)."""
    for chunk in manifest.unique_chunks():
        try:
            if (directory / chunk_relpath(chunk.digest)).stat().st_size != chunk.size:
                return False
        except FileNotFoundError:
            return False
    return True


def verify_chunks(manifest: Manifest, root: Path, digests: Iterable[bytes] | None = None) -> list[ChunkRef]:
    """The manifest's chunks (or only those in ``digests``) that are missing or wrong under ``root``."""
    wanted = None if digests is None else set(digests)
    return [
        ref
        for ref in manifest.unique_chunks()
        if (wanted is None or ref.digest in wanted) and chunk_problem(ref, root) is not None
    ]


def read_manifest(release_dir: Path, public_key) -> Manifest:
    """The verified manifest of ``release_dir``; PosswarmError naming the directory if unreadable."""
    path = Path(release_dir) / MANIFEST_NAME
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ReleaseError(f"release dir {release_dir}: cannot read {MANIFEST_NAME} ({exc.strerror}; is this a release directory?)") from None
    return verify_manifest(data, public_key)


def verify_release(release_dir: Path, public_key) -> Manifest:
    """Check a whole release directory against its signed manifest; the manifest, or ReleaseError/ManifestError."""
    release_dir = Path(release_dir)
    m = read_manifest(release_dir, public_key)
    rid = m.release_id
    try:
        torrent = (release_dir / TORRENT_NAME).read_bytes()
    except OSError as exc:
        raise ReleaseError(f"release {rid}: cannot read {TORRENT_NAME} ({exc.strerror}; re-download or re-publish)") from None
    try:
        hashes = torrent_info_hashes(torrent)
        sizes = torrent_chunk_sizes(torrent)
        piece_size = torrent_piece_size(torrent)
    except ReleaseError as exc:
        raise ReleaseError(f"release {rid}: {exc}") from None
    if hashes != (m.info_hash_v1, m.info_hash_v2):
        raise ReleaseError(f"release {rid}: torrent info-hash does not match the manifest (torrent replaced?)")
    expected = {chunk_relpath(c.digest): c.size for c in m.unique_chunks()}
    if sizes != expected or piece_size != m.piece_size:
        raise ReleaseError(f"release {rid}: torrent files are not the manifest's chunks (torrent replaced?)")
    bad = verify_chunks(m, release_dir)
    if bad:
        first = bad[0]
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise ReleaseError(
            f"release {rid}: chunk {first.hex} {chunk_problem(first, release_dir)}{more} (re-download or re-publish)"
        )
    return m
