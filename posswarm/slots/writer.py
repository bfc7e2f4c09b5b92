"""Write an image release into a boot slot (a block device or a file), fsync it, and read it back against the
signed payload BLAKE3 before anyone may boot it. Blocking: run it from a thread."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import blake3

from posswarm import install
from posswarm.errors import PosswarmError
from posswarm.manifest import Manifest

_READ = 1 << 20


def slot_size(path: Path) -> int | None:
    """Bytes a slot holds: a block device's size, None for a file (it grows)."""
    with open(path, "rb") as f:
        if not _is_block(f.fileno()):
            return None
        return f.seek(0, os.SEEK_END)


def write(manifest: Manifest, release_dir: Path, slot: Path) -> None:
    """The payload into ``slot`` from its verified chunks; PosswarmError when it does not fit or reads back wrong.

    A file slot is cut to the image's size; a partition keeps what lies past the image (never read: the
    check and every boot read only ``total_size`` bytes).
    """
    m = manifest
    if len(m.files) != 1:
        raise PosswarmError(f"release {m.release_id}: a {m.kind} release of {len(m.files)} files is not a disk image "
                            "(only kind=image goes into a boot slot)")
    room = slot_size(slot) if slot.exists() else None
    if room is not None and room < m.total_size:
        raise PosswarmError(f"release {m.release_id}: image of {m.total_size} bytes does not fit slot {slot} "
                            f"({room} bytes); make the slot partitions larger")
    fd = os.open(slot, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with os.fdopen(fd, "wb", closefd=False) as out:
            for data in install.file_content(m, m.files[0], release_dir):
                out.write(data)
        if not _is_block(fd):
            os.ftruncate(fd, m.total_size)
        os.fsync(fd)
    finally:
        os.close(fd)
    _drop_cache(slot)
    if read_back(slot, m.total_size) != m.payload_blake3:
        raise PosswarmError(f"release {m.release_id}: slot {slot} does not read back as the signed image "
                            "(a failing disk? it will be written again)")


def read_back(slot: Path, size: int) -> bytes:
    """BLAKE3 of the first ``size`` bytes of ``slot``."""
    digest = blake3.blake3()
    with open(slot, "rb") as f:
        left = size
        while left:
            data = f.read(min(_READ, left))
            if not data:
                break
            digest.update(data)
            left -= len(data)
    return digest.digest()


def _is_block(fd: int) -> bool:
    return stat.S_ISBLK(os.fstat(fd).st_mode)


def _drop_cache(slot: Path) -> None:
    """Ask the kernel to forget the slot's cached pages, so the read-back reads the disk, not memory."""
    fd = os.open(slot, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
