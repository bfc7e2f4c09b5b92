"""The seeder's watch on each release's rollout.msgpack: re-read when it changes, served only once verified."""

from __future__ import annotations

import os
from pathlib import Path

import trio

from posswarm import logs
from posswarm.catalog.shelf import Shelf
from posswarm.errors import PosswarmError
from posswarm.rollout import MAX_ROLLOUT_BYTES, ROLLOUT_NAME, Rollout, newer, verify_rollout

log = logs.get("seeder")

Stamp = tuple[int, int, int]  # (mtime_ns, size, inode): the CLI's rename changes the inode on every write
_UNREADABLE: Stamp = (-1, -1, -1)  # never equal to a real stat, so the file is tried again next scan


class RolloutWatch:
    """Keeps the shelf's rollout documents in step with the files ``posswarm-seeder release ...`` writes."""

    def __init__(self, public_key) -> None:
        self.public_key = public_key
        self._stamps: dict[Path, Stamp | None] = {}  # of the file last read, verified or not
        self._held: dict[Path, tuple[Rollout, bytes]] = {}
        self._tracked: set[Path] = set()  # release dirs on the shelf

    async def ready(self, directory: Path) -> bool:
        """Whether a new release dir may be shelved: it has no rollout, or one that verifies.

        A release whose rollout does not verify waits: listing it without one would make it
        ``all, active`` for every store, the widest reach, on the strength of a broken file.
        """
        await self._read([directory])
        return directory in self._held or self._stamps.get(directory) is None

    def track(self, shelf: Shelf, directory: Path) -> None:
        """The release in ``directory`` was just put on ``shelf``: offer its rollout and follow its changes from now on."""
        self._tracked.add(directory)
        if directory in self._held:
            shelf.put_rollout(*self._held[directory])

    async def refresh(self, shelf: Shelf) -> None:
        """Re-read the rollouts of tracked releases that changed on disk since the last look."""
        for directory in await self._read(list(self._tracked)):
            if directory in self._held:
                shelf.put_rollout(*self._held[directory])

    async def _read(self, directories: list[Path]) -> list[Path]:
        """Read and verify changed files; the directories whose held rollout changed."""
        known = {d: self._stamps.get(d) for d in directories}
        changed = await trio.to_thread.run_sync(_read_changed, known)
        updated = []
        for directory, (stamp, data) in changed.items():
            self._stamps[directory] = stamp
            if data is None:
                if directory in self._held:
                    # Deleting the file cannot undo a signed instruction nodes already hold; keep serving it.
                    log.warning("rollout.missing", dir=str(directory), serving=self._held[directory][0].sequence)
                continue
            try:
                if isinstance(data, PosswarmError):
                    raise data
                candidate = verify_rollout(data, self.public_key, name=directory.parent.name, version=directory.name)
                held = self._held.get(directory)
                if newer(held[0] if held else None, candidate) is candidate:
                    self._held[directory] = (candidate, data)
                    updated.append(directory)
                    log.info("rollout.serving", release=candidate.release_id, sequence=candidate.sequence,
                             ring=candidate.ring, state=candidate.state)
            except PosswarmError as exc:
                log.error("rollout.rejected", dir=str(directory), reason=str(exc))
        return updated


def _read_changed(known: dict[Path, Stamp | None]) -> dict[Path, tuple[Stamp | None, bytes | PosswarmError | None]]:
    """For each directory whose rollout file's stamp differs from ``known``: its new stamp and bytes (None: absent)."""
    out = {}
    for directory, old in known.items():
        path = directory / ROLLOUT_NAME
        try:
            st = os.stat(path)
        except FileNotFoundError:
            if old is not None:
                out[directory] = (None, None)
            continue
        except OSError as exc:
            out[directory] = (_UNREADABLE, PosswarmError(f"rollout {path}: cannot read it ({exc.strerror}; check permissions)"))
            continue
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp == old:
            continue
        if st.st_size > MAX_ROLLOUT_BYTES:
            out[directory] = (stamp, PosswarmError(f"rollout {path}: {st.st_size} bytes is too large to be a rollout"))
            continue
        try:
            out[directory] = (stamp, path.read_bytes())
        except OSError as exc:
            out[directory] = (_UNREADABLE, PosswarmError(f"rollout {path}: cannot read it ({exc.strerror}; check permissions)"))
    return out
