"""Make file system changes durable: fsync a file, a directory entry, or write-and-fsync in one go."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """A rename or a new name is only durable once its directory is fsynced."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_synced(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """``mode`` applies to a new file (a secret is never readable by others, not even for a moment)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def replace_synced(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write ``data`` to a sibling temp file, fsync it, rename it over ``path``, fsync the directory."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)  # a leftover temp file keeps its old mode; start from a new one
    write_synced(tmp, data, mode=mode)
    os.replace(tmp, path)
    fsync_dir(path.parent)
