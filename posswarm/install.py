"""Finish a release staged in a directory, check it, rename it into place, switch ``current`` atomically, keep ``previous``."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from posswarm.errors import PosswarmError
from posswarm.fsync import fsync_dir, replace_synced
from posswarm.manifest import Manifest
from posswarm.staged_payload import StagedPayload

_STAGING_PREFIX = ".staging-"


def staging_of(installed_root: Path, version: str) -> Path:
    """Where a version of a release name is written before it is renamed into place."""
    return installed_root / f"{_STAGING_PREFIX}{version}"


def assemble(manifest: Manifest, release_dir: Path, installed_root: Path,
             staged: StagedPayload | None = None) -> Path:
    """Build ``installed_root/VERSION`` from the release's chunks; returns it.

    ``staged`` holds what was written while the torrent downloaded (see posswarm/staging_stream.py); what it
    lacks is written now. The payload is fsynced and its BLAKE3 over all files in manifest order must equal
    the signed ``payload_blake3`` before it is renamed into place, so a crash or a bad chunk can never leave
    a half-written version that looks installed.
    """
    final = installed_root / manifest.version
    if final.is_dir():
        if staged is not None:
            staged.abort()
        return final
    staging = staging_of(installed_root, manifest.version)
    payload = staged
    try:
        payload = payload or StagedPayload.into_directory(manifest, staging)
        payload.finish(release_dir)
        fsync_dir(staging)
        os.rename(staging, final)
        fsync_dir(installed_root)
    except BaseException:
        if payload is not None:
            payload.close()  # an open file keeps its blocks: on a full disk the room comes back only now
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final


def activate(installed_root: Path, version: str) -> str | None:
    """Point ``current`` at VERSION atomically; the old target becomes ``previous``. Returns the old version."""
    current = installed_root / "current"
    old = os.readlink(current) if current.is_symlink() else None
    if old == version:
        return None
    _swap_link(installed_root, "current", version)
    if old is not None:
        _swap_link(installed_root, "previous", old)
    _remove_stale(installed_root, keep={version, old})
    return old


def current_version(installed_root: Path) -> str | None:
    """The running version of a release name, or None before its first install."""
    link = installed_root / "current"
    return os.readlink(link) if link.is_symlink() else None


def previous_version(installed_root: Path) -> str | None:
    link = installed_root / "previous"
    return os.readlink(link) if link.is_symlink() else None


def rollback(installed_root: Path) -> tuple[str, str]:
    """Switch ``current`` back to ``previous`` and hold the version rolled back from; returns (from, to).

    The held version stays on disk as ``previous`` (so it can be inspected) but the node will not
    install it again; a newer published version supersedes the hold.
    """
    current, previous = current_version(installed_root), previous_version(installed_root)
    name = installed_root.name
    if current is None:
        raise PosswarmError(f"release {name}: nothing is installed, so there is nothing to roll back")
    if previous is None or not (installed_root / previous).is_dir():
        raise PosswarmError(f"release {name}: no previous version is kept, so {current} cannot be rolled back")
    _swap_link(installed_root, "current", previous)
    _swap_link(installed_root, "previous", current)
    hold(installed_root, current)
    return current, previous


def hold(installed_root: Path, version: str) -> None:
    held = held_versions(installed_root) | {version}
    installed_root.mkdir(parents=True, exist_ok=True)
    replace_synced(installed_root / "held", "".join(f"{v}\n" for v in sorted(held)).encode())  # survives a power cut


def held_versions(installed_root: Path) -> set[str]:
    """Versions rolled back on this node (by ``posswarm rollback`` or a failed health check)."""
    try:
        return {line.strip() for line in (installed_root / "held").read_text().splitlines() if line.strip()}
    except FileNotFoundError:
        return set()


def _swap_link(root: Path, name: str, target: str) -> None:
    tmp = root / f".{name}.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, root / name)  # rename(2) over the old link: readers see old or new, never neither
    fsync_dir(root)


def _remove_stale(root: Path, keep: set[str | None]) -> None:
    for path in root.iterdir():
        if path.name in ("current", "previous", "held") or path.name in keep or path.is_symlink():
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
