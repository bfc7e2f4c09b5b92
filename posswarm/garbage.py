"""Remove releases a node no longer needs, and the chunks nothing else links to."""

from __future__ import annotations

import shutil
from pathlib import Path

from posswarm.datadir import DataDir
from posswarm.release import MANIFEST_NAME
from posswarm.torrent.add_params import RESUME_FILE


def stale_releases(data: DataDir, keep: dict[str, set[str]]) -> list[tuple[str, str]]:
    """(name, version) of laid-out releases not in ``keep`` (name -> versions to keep)."""
    found = []
    for manifest in data.releases.glob(f"*/*/{MANIFEST_NAME}"):
        name, version = manifest.parent.parent.name, manifest.parent.name
        if version not in keep.get(name, set()):
            found.append((name, version))
    return sorted(found)


def remove_release(data: DataDir, name: str, version: str) -> None:
    """Delete a release directory: manifest first, so a crash half-way leaves no 'laid out' release behind."""
    directory = data.release(name, version)
    (directory / MANIFEST_NAME).unlink(missing_ok=True)
    shutil.rmtree(directory, ignore_errors=True)


def trim_release(data: DataDir, name: str, version: str) -> int:
    """Delete a release's chunk files and its torrent's resume data, keeping its manifest and torrent (a boot slot
    holds the image); the chunk store's copies go too unless another release links them. The bytes freed."""
    directory = data.release(name, version)
    if not (directory / "chunks").is_dir():
        return 0
    (directory / RESUME_FILE).unlink(missing_ok=True)  # it would vouch for files that are gone
    shutil.rmtree(directory / "chunks", ignore_errors=True)
    return prune_chunks(data.chunk_store)[1]


def prune_chunks(store_root: Path) -> tuple[int, int]:
    """Delete chunks of the store that no release directory links to any more; returns (chunks, bytes).

    Every release file is a hard link to its store chunk, so a link count of 1 means only the store holds it.
    """
    removed = freed = 0
    for chunk in store_root.glob("chunks/*/*"):
        try:
            st = chunk.stat()
            if st.st_nlink == 1 and not chunk.name.startswith("."):
                chunk.unlink()
                removed += 1
                freed += st.st_size
        except FileNotFoundError:
            continue
    return removed, freed
