"""A replica's bulk fill written without fsyncs: the synced marker file that says so, its end, and a cut-short fill
wiped so it is never trusted."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from posswarm import logs
from posswarm.fsync import fsync_dir, fsync_file, replace_synced

log = logs.get("sku")

SUFFIX = ".filling"


class UnsyncedFill:
    """A fresh replica's bulk fill is written with synchronous=OFF: 1M SKUs in 50k batches took 12-14 s of wall time
    to insert synced at their checkpoints, 9.9 s unsynced (measured on this shared disk). While :attr:`marker` exists
    the file may be torn by a power cut, so a replica opened with it is wiped and filled again from nothing: the
    replica is a cache of central's catalog, and the store's cache sends it whole again."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.marker = Path(f"{path}{SUFFIX}")
        self.active = False  # whether this connection writes unsynced (a flag: lookups ask it, never the disk)

    def restart_if_cut(self) -> None:
        """Before the replica is opened: wipe a fill that did not end."""
        if not self.marker.exists():
            return
        log.warning("sku.fill_restarted", path=str(self.path),
                    hint="the last bulk fill did not finish; the catalog is taken again from the store's cache")
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        self.marker.unlink()
        fsync_dir(self.marker.parent)

    def begin(self, db: sqlite3.Connection) -> None:
        """The marker first, synced; then the connection's writes go unsynced."""
        if not self.active:
            replace_synced(self.marker, b"an unsynced bulk fill of this replica is under way\n")
            db.execute("PRAGMA synchronous=OFF")
            self.active = True

    def end(self, db: sqlite3.Connection, synchronous: str) -> None:
        """Sync everything the fill wrote, then drop the marker: from here a crash loses nothing of it."""
        if not self.active:
            return
        db.execute(f"PRAGMA synchronous={synchronous}")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        # Synced here as well: a reader can keep the checkpoint from completing, and only a completed one syncs
        # the database file (earlier checkpoints wrote the fill's pages there unsynced).
        for path in (self.path, Path(f"{self.path}-wal")):
            if path.exists():
                fsync_file(path)
        self.marker.unlink()
        fsync_dir(self.marker.parent)
        self.active = False
