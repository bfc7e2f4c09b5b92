"""The verified releases a process offers: what its catalog lists and whose files it serves."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from posswarm.catalog.model import Catalog, CatalogEntry
from posswarm.manifest import Manifest
from posswarm.release import MANIFEST_NAME, TORRENT_NAME
from posswarm.rollout import Rollout

#: The files of a release directory that the catalog serves; chunks too, as a BEP 19 web seed.
SERVED_FILES = (MANIFEST_NAME, TORRENT_NAME)
_CHUNK = re.compile(r"^chunks/([0-9a-f]{2})/\1[0-9a-f]{62}$")


class Shelf:
    """Releases that passed verification, keyed by (name, version); owned by one trio task at a time."""

    def __init__(self) -> None:
        self._releases: dict[tuple[str, str], tuple[Manifest, Path]] = {}
        # Held in memory, not served from disk: only a document whose signature was checked goes out.
        self._rollouts: dict[tuple[str, str], tuple[Rollout, bytes]] = {}
        # Central's verified TUF metadata, relayed byte for byte under /tuf/ (file name -> bytes).
        self._tuf: dict[str, bytes] = {}
        self.seeds: tuple[str, ...] = ()
        self.web_seeds: tuple[str, ...] = ()
        # Grows with every change a follower acts on (signed state, a release, a rollout), so the catalog's
        # readers can wait for the next one instead of polling (posswarm/catalog/changes.py).
        self.generation = 0
        self._listeners: list[Callable[[], None]] = []

    def on_change(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def _changed(self) -> None:
        self.generation += 1
        for listener in self._listeners:
            listener()

    @property
    def tuf(self) -> dict[str, bytes]:
        return self._tuf

    @tuf.setter
    def tuf(self, files: dict[str, bytes]) -> None:
        if files != self._tuf:
            self._tuf = files
            self._changed()

    def put(self, manifest: Manifest, release_dir: Path) -> None:
        self._releases[(manifest.name, manifest.version)] = (manifest, release_dir)
        self._changed()

    def remove(self, name: str, version: str) -> None:
        self._releases.pop((name, version), None)
        self._rollouts.pop((name, version), None)
        self._changed()

    def put_rollout(self, rollout: Rollout, data: bytes) -> None:
        """Offer the verified rollout document ``data`` (the caller checked its signature and sequence)."""
        self._rollouts[(rollout.name, rollout.version)] = (rollout, data)
        self._changed()

    def rollout(self, name: str, version: str) -> bytes | None:
        """The release's signed rollout.msgpack, or None when it has none (it then follows its manifest)."""
        found = self._rollouts.get((name, version))
        return None if found is None else found[1]

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._releases

    def manifests(self) -> list[Manifest]:
        return [m for m, _ in self._releases.values()]

    def file(self, name: str, version: str, filename: str) -> Path | None:
        found = self._releases.get((name, version))
        if found is None or not (filename in SERVED_FILES or _CHUNK.match(filename)):
            return None
        return found[1] / filename

    def catalog(self) -> Catalog:
        entries = sorted((CatalogEntry.of(m, self._rollout_sequence(m)) for m, _ in self._releases.values()),
                         key=lambda e: (e.name, e.version))
        return Catalog(tuple(entries), self.seeds, self.web_seeds)

    def _rollout_sequence(self, manifest: Manifest) -> int:
        found = self._rollouts.get((manifest.name, manifest.version))
        return 0 if found is None else found[0].sequence
