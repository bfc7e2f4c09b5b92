"""Which torrents one session holds under which key, and the adds and removes waiting for libtorrent's answer."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import trio

from posswarm.errors import PosswarmError
from posswarm.torrent.accounting import SourceTally
from posswarm.torrent.progress import Status


@dataclass
class Held:
    """One torrent in the session: its libtorrent handle, byte tally and last polled status."""

    key: str
    ident: str
    handle: object
    tally: SourceTally
    save_path: Path
    status: Status | None = None
    finished: bool = False
    flushed: trio.Event = field(default_factory=trio.Event)


@dataclass
class Pending:
    """An add or remove waiting for its alert."""

    event: trio.Event = field(default_factory=trio.Event)
    delete_files: bool = False
    error: str | None = None
    save_path: Path | None = None


class Holdings:
    """The session's torrents by key; alerts name torrents by ident, so ident -> key is kept as well."""

    def __init__(self, lan_network: str | None):
        self.lan_network = lan_network
        self.torrents: dict[str, Held] = {}
        self.keys: dict[str, str] = {}  # ident -> key, filled before the add so alerts find their key
        self.adding: dict[str, Pending] = {}  # ident -> pending add
        self.removing: dict[str, Pending] = {}  # ident -> pending remove

    def check_new(self, key: str, ident: str) -> None:
        """Refuse to add a torrent whose key or info-hash the session already holds under another name."""
        if key in self.keys.values():
            raise PosswarmError(f"torrent {key}: already added with a different torrent (remove it first)")
        if ident in self.keys:
            raise PosswarmError(
                f"torrent {key}: the same torrent is already added as {self.keys[ident]} (remove that one first)"
            )

    def added(self, ident: str, handle, error: str | None) -> str | None:
        """libtorrent answered an add: take the torrent in; its key when it is new to the session."""
        pending = self.adding.get(ident)
        key = self.keys.get(ident)
        taken = None
        if error is None and key is not None and key not in self.torrents:
            self.torrents[key] = Held(key, ident, handle, SourceTally(self.lan_network),
                                      pending.save_path if pending else Path("."))
            taken = key
        if pending is not None:
            pending.error = error
            pending.event.set()
        return taken

    def removed(self, ident: str) -> None:
        """libtorrent took a torrent out (a remove that deletes files waits for ``deleted`` instead)."""
        pending = self.removing.get(ident)
        if pending is not None and not pending.delete_files:
            pending.event.set()

    def deleted(self, ident: str, error: str | None) -> None:
        """libtorrent deleted a removed torrent's files, or failed to."""
        pending = self.removing.get(ident)
        if pending is not None and pending.delete_files:
            pending.error = error
            pending.event.set()

    def flushed(self, key: str) -> None:
        if (torrent := self.torrents.get(key)) is not None:
            torrent.flushed.set()

    def close(self) -> None:
        """The session is closing: every waiting add or remove fails, no handle is used again."""
        for pending in [*self.adding.values(), *self.removing.values()]:
            pending.error = "the session closed"
            pending.event.set()
        for torrent in self.torrents.values():
            torrent.handle = None
