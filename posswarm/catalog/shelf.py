"""The verified releases a process offers: what its catalog lists and whose files it serves."""

from __future__ import annotations

import re
from pathlib import Path

from posswarm.catalog.model import Catalog, CatalogEntry
from posswarm.manifest import Manifest

#: The files of a release directory that the catalog serves; chunks too, as a BEP 19 web seed.
SERVED_FILES = ("manifest.msgpack", "release.torrent")
_CHUNK = re.compile(r"^chunks/([0-9a-f]{2})/\1[0-9a-f]{62}$")


class Shelf:
    """Releases that passed verification, keyed by (name, version); owned by one trio task at a time."""

    def __init__(self) -> None:
        self._releases: dict[tuple[str, str], tuple[Manifest, Path]] = {}
        self.seeds: tuple[str, ...] = ()
        self.web_seeds: tuple[str, ...] = ()

    def put(self, manifest: Manifest, release_dir: Path) -> None:
        self._releases[(manifest.name, manifest.version)] = (manifest, release_dir)

    def remove(self, name: str, version: str) -> None:
        self._releases.pop((name, version), None)

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
        entries = sorted((CatalogEntry.of(m) for m, _ in self._releases.values()), key=lambda e: (e.name, e.version))
        return Catalog(tuple(entries), self.seeds, self.web_seeds)
