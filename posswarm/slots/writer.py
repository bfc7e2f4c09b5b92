"""Finish an image release in a boot slot (a block device or a file), fsync it, and read it back against the
signed payload BLAKE3 before anyone may boot it. Blocking: run it from a thread."""

from __future__ import annotations

import os
from pathlib import Path

import blake3

from posswarm.errors import PosswarmError
from posswarm.manifest import Manifest
from posswarm.staged_payload import StagedPayload

_READ = 1 << 20


def write(manifest: Manifest, release_dir: Path, slot: Path, staged: StagedPayload | None = None) -> None:
    """The payload into ``slot`` (what ``staged`` did not write while the torrent downloaded is written now);
    PosswarmError when it does not fit or reads back wrong.

    A file slot is cut to the image's size; a partition keeps what lies past the image (never read: the
    check and every boot read only ``total_size`` bytes).
    """
    m = manifest
    payload = staged or StagedPayload.into_slot(m, slot)
    try:
        payload.finish(release_dir)
    finally:
        payload.close()
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


def _drop_cache(slot: Path) -> None:
    """Ask the kernel to forget the slot's cached pages, so the read-back reads the disk, not memory."""
    fd = os.open(slot, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
