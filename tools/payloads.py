"""What a demo or an emulated rollout distributes: a real ext4 image by default, random bytes as the worst case.

A real image (tools/images.py: this machine's own files in a deterministic ext4 filesystem) compresses and
shifts on every rebuild the way a POS image does; random bytes do neither, so they stay as the
incompressible worst case. Both are written to disk without holding the image in memory.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from posswarm.errors import PosswarmError
from tools import images
from tools.lab import change_image, write_image

KINDS = ("real", "random")
# Of an image under FULL_FROM_MB, in file bytes: ext4's 4 MiB journal and inode tables leave less room
# (0.72 did not fit a 16 MiB image, 0.5 not an 8 MiB one; gather() takes whole directories, so it overshoots).
# From 24 MiB up the images are as full as a real one (0.72 fits, and so does its package-upgrade build).
SMALL_FILE_SHARE = 0.35
FULL_FROM_MB = 24


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise PosswarmError(f"--payload {kind!r}: choose one of {', '.join(KINDS)}")
    if kind == "real" and shutil.which("mkfs.ext4") is None:
        raise PosswarmError("--payload real needs mkfs.ext4 (apt-get install e2fsprogs), or use --payload random")
    return kind


def first(workdir: Path, size_mb: int, kind: str, *, seed: int = 1) -> Path:
    """Version one of the payload, ``size_mb`` MiB, at ``workdir/v1.img``."""
    workdir.mkdir(parents=True, exist_ok=True)
    image = workdir / "v1.img"
    if kind == "random":
        return write_image(image, size_mb, seed=seed)
    size = size_mb << 20
    # ext4's own metadata (journal, inode tables) is a larger share of a small filesystem
    share = images.FILE_SHARE if size_mb >= FULL_FROM_MB else SMALL_FILE_SHARE
    images.gather(workdir / "tree-v1", int(size * share))
    images.build_image(workdir / "tree-v1", image, size)
    return image


def update(workdir: Path, previous: Path, size_mb: int, kind: str, *, percent: float, seed: int = 7) -> tuple[Path, int]:
    """The next version at ``workdir/v2.img`` and the bytes of content that changed.

    Random: ``percent`` % of the bytes rewritten in three regions. Real: the next build of the same
    filesystem after a package-upgrade-style change (about 5 % of the files edited or appended to, 1 %
    removed); ``percent`` does not apply, the change is what a package upgrade does.
    """
    image = workdir / "v2.img"
    if kind == "random":
        return image, change_image(previous, image, percent=percent, seed=seed)
    change = images.next_tree(workdir / "tree-v1", workdir / "tree-v2", "upgrade", seed=seed)
    images.build_image(workdir / "tree-v2", image, size_mb << 20)
    return image, change.bytes_changed
