"""Where a node keeps things under its data directory (one place, so every module agrees)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DataDir:
    """Layout of ``node.data_dir``::

        releases/NAME/VERSION/   manifest.msgpack, release.torrent, chunks/<h[:2]>/<h>  (the swarm's files)
        chunks/                  every verified chunk, hard-linked, reused by later releases
        installed/NAME/VERSION/  an assembled, verified payload
        installed/NAME/current   symlink to the running version; ``previous`` to the one before
        status.json              what ``posswarm status`` and the demo read
        activate/                requests to root's privileged hook and its answers (posswarm/privileged.py)
    """

    root: Path

    def release(self, name: str, version: str) -> Path:
        return self.root / "releases" / name / version

    @property
    def releases(self) -> Path:
        return self.root / "releases"

    @property
    def chunk_store(self) -> Path:
        return self.root / "chunks"

    def installed(self, name: str) -> Path:
        return self.root / "installed" / name

    @property
    def activation_spool(self) -> Path:
        return self.root / "activate"

    @property
    def status_file(self) -> Path:
        return self.root / "status.json"

    def create(self) -> None:
        for path in (self.releases, self.chunk_store, self.root / "installed"):
            path.mkdir(parents=True, exist_ok=True)
