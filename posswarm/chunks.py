"""Content-defined chunking (FastCDC + BLAKE3), a chunk's stored (zstd) form, and the on-disk chunk store."""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import blake3
import zstandard
from pyfastcdc import FastCDC

from posswarm.errors import PosswarmError

# 8/32/128 KiB, chosen on real ext4 images (posswarm-bench delta --sweep; docs/benchmarks.md "Delta
# updates on real images"): an image build moves files around, so an update renews the chunks around
# every moved or changed file, and smaller chunks renew less. 256 KiB (chosen on random data with three
# contiguous edits) sent 1.6x casync's bytes for a package upgrade; 32 KiB sends less than casync's
# 64 KiB while compressing the full image within 2 % of it. Each chunk is one torrent file of one piece.
CHUNK_MIN = 8 * 1024
CHUNK_AVG = 32 * 1024
CHUNK_MAX = 128 * 1024

# One chunker for the process: its parameters are part of the release format (they decide
# every chunk boundary, hence dedupe between versions), so never derive them from config.
_CDC = FastCDC(CHUNK_AVG, min_size=CHUNK_MIN, max_size=CHUNK_MAX)


@dataclass(frozen=True)
class Cut:
    """One chunk of a file: where it lies, its BLAKE3, and a view of its bytes (valid while referenced)."""

    offset: int
    length: int
    digest: bytes
    data: memoryview


def cuts(path: Path) -> Iterator[Cut]:
    """The chunks of file ``path`` in order, with their bytes (mmap-backed, so read once at disk speed)."""
    offset = 0
    for data in spans(path):
        yield Cut(offset, len(data), blake3.blake3(data).digest(), data)
        offset += len(data)


def spans(path: Path | str) -> Iterator[memoryview]:
    """The bytes of each chunk of file ``path`` in order, not yet hashed: views of its mmap, valid while referenced.

    For a caller that names the chunks on other threads (BLAKE3 gives up the GIL; FastCDC's loop does too).
    """
    # pyfastcdc mmaps the file and an empty file cannot be mmapped: it simply has no chunks.
    if os.stat(path).st_size == 0:
        return
    for c in _CDC.cut_file(str(path)):
        yield c.data


# A chunk is stored, seeded and sent as one zstd frame when that is smaller than its content, else as its
# content. The level is part of the release format: the same chunk must always give the same stored bytes
# (a torrent's merkle roots and hard-link reuse between versions depend on it), so never derive it from
# config. Level 3 (zstd's default): docs/benchmarks.md "Delta updates on real images" has the measured sweep.
ZSTD_LEVEL = 3
# zstd's largest window at level 3 is 2 MiB and a chunk is at most CHUNK_MAX: a frame asking a device for
# more memory than that was not written by a publisher.
MAX_WINDOW = 8 * 1024 * 1024

_codecs = threading.local()  # zstd contexts are not thread-safe and are costly to make: one per thread


class ChunkError(PosswarmError):
    """A stored chunk that does not decode to the content its manifest entry promises."""


def _compressor() -> zstandard.ZstdCompressor:
    c = getattr(_codecs, "compressor", None)
    if c is None:
        # Content size in the header (a device checks it before decoding); no checksum (BLAKE3 covers it);
        # one thread (multi-threaded zstd writes different bytes).
        c = _codecs.compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True,
                                                          write_checksum=False, threads=0)
    return c


def _decompressor() -> zstandard.ZstdDecompressor:
    d = getattr(_codecs, "decompressor", None)
    if d is None:
        d = _codecs.decompressor = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW)
    return d


def pack(content) -> bytes:
    """The stored form of chunk ``content``: its zstd frame if shorter, else the content as it is.

    So a stored chunk is compressed exactly when it is shorter than its content; nothing else records it.
    """
    frame = _compressor().compress(content)
    return frame if len(frame) < len(content) else bytes(content)


def unpack(stored: bytes, length: int) -> bytes:
    """The content of a stored chunk that must hold exactly ``length`` bytes; ChunkError otherwise.

    Stored bytes come from peers and disks: the frame's declared size is checked against ``length``
    before anything is decoded, so no input makes a device produce more than ``length`` bytes.
    """
    if len(stored) == length:
        return stored
    if not 0 < len(stored) < length:
        raise ChunkError(f"has {len(stored)} stored bytes for {length} bytes of content")
    try:
        frame = zstandard.get_frame_parameters(stored)
    except zstandard.ZstdError:
        raise ChunkError("is not a zstd frame") from None
    if frame.content_size != length or frame.dict_id != 0 or frame.window_size > MAX_WINDOW:
        raise ChunkError(f"is a zstd frame of {frame.content_size} bytes (window {frame.window_size}, "
                         f"dictionary {frame.dict_id}), not of {length} bytes")
    try:
        content = _decompressor().decompress(stored, allow_extra_data=False)
    except zstandard.ZstdError as exc:
        raise ChunkError(f"does not decompress ({exc})") from None
    if len(content) != length:  # the library sizes its buffer by the header; never trust that it filled it
        raise ChunkError(f"decompresses to {len(content)} bytes, not {length}")
    return content


def read_content(path: Path, size: int, length: int) -> bytes:
    """The content of the chunk file ``path`` that must be ``size`` bytes stored, ``length`` decoded.

    OSError if it cannot be read; ChunkError if its size or encoding is wrong (its BLAKE3 is the caller's).
    """
    # A bare descriptor, not a file object: reading a 420 MiB image's 6,593 chunk files took 0.08 CPU-s
    # this way against 0.14-0.22 s through open() (measured), of ~0.7 s to read, decode and verify them.
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        stored = b""
        while len(stored) <= size:  # bounded: a grown file is refused without reading all of it
            more = os.read(fd, size + 1 - len(stored))
            if not more:
                break
            stored += more
    finally:
        os.close(fd)
    if len(stored) != size:
        raise ChunkError(f"has {os.stat(path).st_size} bytes, not {size}")
    return unpack(stored, length)


def chunk_relpath(digest: bytes) -> str:
    h = digest.hex()
    return f"chunks/{h[:2]}/{h}"



def _place(dest: Path, fill, *, parent_exists: bool = False) -> None:
    """Create ``dest`` atomically: ``fill(tmp_path)`` writes a sibling temp name, then rename over."""
    if not parent_exists:
        dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".tmp-{dest.name[:16]}-{secrets.token_hex(6)}"
    try:
        fill(tmp)
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _link_or_copy(src: Path, dest: Path) -> None:
    try:
        os.link(src, dest)
    except OSError as exc:
        # EXDEV: another filesystem; EMLINK: inode link limit; EPERM/ENOTSUP: no hard links here.
        if exc.errno not in (errno.EXDEV, errno.EMLINK, errno.EPERM, errno.ENOTSUP):
            raise
        shutil.copyfile(src, dest)
        with open(dest, "rb") as f:
            os.fsync(f.fileno())


class ChunkStore:
    """A directory of chunks named by BLAKE3, laid out as ``chunks/<h[:2]>/<h>`` under ``root``."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._dirs: set[Path] = set()  # chunk directories known to exist

    def path(self, digest: bytes) -> Path:
        return self.root / chunk_relpath(digest)

    def has(self, digest: bytes, size: int) -> bool:
        """Present with the right stored size (content is trusted: only verified bytes ever get in)."""
        return self.stored_size(digest) == size

    def stored_size(self, digest: bytes) -> int | None:
        """The size of chunk ``digest`` as stored here, or None if it is absent.

        A publisher re-uses the stored form it finds rather than compressing again, so one chunk has
        one stored form for the store's whole life, whatever zstd build or level published it first.
        """
        try:
            return self.path(digest).stat().st_size
        except OSError:
            return None

    def link_into(self, digest: bytes, dest_root: Path, size: int | None = None) -> bool:
        """Hard-link chunk ``digest`` to ``dest_root/chunks/..`` (copy across filesystems); False if absent.

        With ``size``, also False when the store holds another stored form (an older, uncompressed
        publish): linking it would let the torrent rewrite, in place, an inode other releases share.
        """
        src = self.path(digest)
        if not src.is_file() or (size is not None and self.stored_size(digest) != size):
            return False
        dest = Path(dest_root) / chunk_relpath(digest)
        try:
            if dest.exists() and os.path.samefile(src, dest):
                return True
        except OSError:
            pass

        try:
            _place(dest, lambda tmp: _link_or_copy(src, tmp))
        except FileNotFoundError:
            return False  # the chunk vanished under us (concurrent GC)
        return True

    def link_release(self, chunks, release_dir: Path) -> int:
        """Link each of ``chunks`` (ChunkRefs) the store holds into ``release_dir`` where it is not yet; the stored
        bytes linked."""
        reused = 0
        for chunk in chunks:
            # only the same stored form: libtorrent would rewrite, in place, an inode other releases share
            here = release_dir / chunk_relpath(chunk.digest)
            if not here.exists() and self.link_into(chunk.digest, release_dir, size=chunk.size):
                reused += chunk.size
        return reused

    def adopt(self, src_path: Path, digest: bytes) -> Path:
        """Hard-link an existing, already verified file into the store as chunk ``digest``."""
        dest = self.path(digest)
        src_path = Path(src_path)
        if dest.parent in self._dirs:
            try:
                os.link(src_path, dest)  # the common case, new to the store: one atomic link, nothing to replace
                return dest
            except FileExistsError:
                pass
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.EMLINK, errno.EPERM, errno.ENOTSUP):
                    raise
        if self.has(digest, src_path.stat().st_size):
            return dest

        # A publish adopts thousands of chunks into the same 256 directories: make each once.
        _place(dest, lambda tmp: _link_or_copy(src_path, tmp), parent_exists=dest.parent in self._dirs)
        self._dirs.add(dest.parent)
        return dest

    def digests(self) -> Iterator[bytes]:
        """Every chunk digest present (for GC and stats)."""
        base = self.root / "chunks"
        if not base.is_dir():
            return
        for sub in base.iterdir():
            if sub.is_dir() and len(sub.name) == 2:
                for f in sub.iterdir():
                    if len(f.name) == 64 and f.name.startswith(sub.name):
                        try:
                            yield bytes.fromhex(f.name)
                        except ValueError:
                            continue
