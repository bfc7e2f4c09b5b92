"""Content-defined chunking (FastCDC + BLAKE3) and the on-disk chunk store."""

from __future__ import annotations

import errno
import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import blake3
from pyfastcdc import FastCDC

# 256 KiB on average, not DESIGN.md's ~1 MiB: an update moves whole chunks, and re-chunking the same
# 5 %-changed image moved 3.80x the changed bytes at 1 MiB, 1.61x at 512 KiB, 1.20x at 256 KiB
# (posswarm-netsim --update-percent 5; docs/benchmarks.md). It also matches the 256 KiB piece size,
# so a chunk is about one v2 piece.
CHUNK_MIN = 64 * 1024
CHUNK_AVG = 256 * 1024
CHUNK_MAX = 1024 * 1024

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
    # pyfastcdc mmaps the file and an empty file cannot be mmapped: it simply has no chunks.
    if os.stat(path).st_size == 0:
        return
    for c in _CDC.cut_file(str(path)):
        yield Cut(c.offset, c.length, blake3.blake3(c.data).digest(), c.data)


def chunk_relpath(digest: bytes) -> str:
    h = digest.hex()
    return f"chunks/{h[:2]}/{h}"


def _place(dest: Path, fill) -> None:
    """Create ``dest`` atomically: ``fill(tmp_path)`` writes a sibling temp name, then rename over."""
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

    def path(self, digest: bytes) -> Path:
        return self.root / chunk_relpath(digest)

    def has(self, digest: bytes, size: int) -> bool:
        """Present with the right size (content is trusted: only verified bytes ever get in)."""
        try:
            return self.path(digest).stat().st_size == size
        except OSError:
            return False

    def link_into(self, digest: bytes, dest_root: Path) -> bool:
        """Hard-link chunk ``digest`` to ``dest_root/chunks/..`` (copy across filesystems); False if absent."""
        src = self.path(digest)
        if not src.is_file():
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

    def adopt(self, src_path: Path, digest: bytes) -> Path:
        """Hard-link an existing, already verified file into the store as chunk ``digest``."""
        dest = self.path(digest)
        src_path = Path(src_path)
        if self.has(digest, src_path.stat().st_size):
            return dest

        _place(dest, lambda tmp: _link_or_copy(src_path, tmp))
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
