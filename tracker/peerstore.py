"""Who announced what and when: the PeerStore protocol and its in-memory implementation."""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Iterator
from sys import intern
from typing import Protocol

from tracker.announce import Announce, compact_peer


@dataclasses.dataclass(frozen=True, slots=True)
class Peer:
    """A node's last announce for one torrent, when it came, whether it said ``stopped``, when it last progressed.

    A Peer holds the announce's fields itself (one object a peer, not two: a tracker holds 100,000s
    of them) and reads as an Announce, so the hand-out uses the records directly; the fields no
    reader of a record needs (uploaded, downloaded, event, compact, numwant) are left out of it.
    """

    info_hash: bytes
    peer_id: bytes
    ip: str
    port: int
    left: int
    store: str | None
    role: str | None
    device_class: str | None
    node: str | None
    release: str | None
    size: int | None
    wan: int | None
    lan: int | None
    installed: bool
    ring: str | None
    last_seen: float
    stopped: bool = False
    progressed: float | None = None  # last time ``left`` or ``installed`` changed; None = last_seen

    # Announce fields a record does not keep, as constants so the record still reads as an Announce.
    uploaded = downloaded = 0
    event = ""
    compact = True
    numwant = None
    node_key = Announce.node_key

    @property
    def announce(self) -> Peer:
        """The record read as its announce (it is one)."""
        return self

    @property
    def progressed_at(self) -> float:
        return self.progressed if self.progressed is not None else self.last_seen


# The Announce fields a record keeps, in the order Peer takes them.
RECORD_FIELDS = tuple(f.name for f in dataclasses.fields(Peer) if f.name not in ("last_seen", "stopped", "progressed"))
_kept_values = operator.attrgetter(*RECORD_FIELDS)


def peer_key(announce: Announce) -> str | bytes:
    """Whose record an announce replaces: a posswarm node by its node id, a plain client by its ip:port.

    A plain client that restarts comes back with a fresh peer_id on the same ip:port, and its old
    record is a dead predecessor, so the address is the identity (as opentracker has it). Not so for
    posswarm nodes: behind a store's NAT many tills share ip:port as the tracker sees it, and their
    node ids tell them apart. The address is kept in its compact 6/18-byte form: the smallest key.
    """
    return announce.node if announce.node is not None else compact_peer(announce.ip, announce.port)


def successor(old: Peer | None, announce: Announce, now: float, *, values: list | None = None) -> Peer:
    """The record that replaces ``old`` (this node's previous record of the torrent) after ``announce``.

    ``values`` = the kept fields of the announce as the record should hold them (default: as they came).
    """
    moved = old is None or (old.left, old.installed) != (announce.left, announce.installed)
    return Peer(*(_kept_values(announce) if values is None else values), last_seen=now,
                stopped=announce.event == "stopped", progressed=now if moved else old.progressed_at)


class PeerStore(Protocol):
    """Storage only: hand-out order is the policies' job, sampling the server's."""

    def record(self, announce: Announce, now: float) -> None:
        """Remember ``announce`` as its node's latest for its torrent (``stopped`` takes it out of the swarm)."""

    def swarm(self, info_hash: bytes, now: float) -> list[Announce]:
        """The live peers of a torrent: announced within the peer TTL and not stopped."""

    def counts(self, info_hash: bytes, now: float) -> tuple[int, int, int]:
        """(complete, incomplete, downloaded) of a torrent, as BEP 48 scrape reports them."""

    def info_hashes(self) -> list[bytes]:
        """Every torrent with at least one retained record."""

    def records(self) -> Iterator[Peer]:
        """Every retained record, live, stopped or quiet, for /stats."""

    def expire(self, now: float) -> int:
        """Forget records older than the retention; returns how many went."""


class MemoryPeerStore:
    """PeerStore in a dict: one process, lost on restart (nodes re-announce within an interval)."""

    def __init__(self, *, peer_ttl: float, retain: float) -> None:
        self.peer_ttl = peer_ttl
        self.retain = max(retain, peer_ttl)
        self._swarms: dict[bytes, dict[str | bytes, Peer]] = {}
        self._hashes: dict[bytes, bytes] = {}
        self._downloaded: dict[bytes, int] = {}
        self._changes: dict[bytes, int] = {}  # info_hash -> the store's change count at its last change
        self._change_count = 0

    def changes(self, info_hash: bytes) -> int:
        """A number that moves whenever a torrent's hand-out could: a peer joins, stops, expires or completes.

        Drawn from one store-wide count, so a torrent that expires and comes back never repeats a number.
        """
        return self._changes.get(info_hash, 0)

    def _changed(self, info_hash: bytes) -> None:
        self._change_count += 1
        self._changes[info_hash] = self._change_count

    def record(self, announce: Announce, now: float) -> None:
        shared = self._hashes.setdefault(announce.info_hash, announce.info_hash)
        swarm = self._swarms.setdefault(shared, {})
        key = peer_key(announce)
        old = swarm.get(key)
        new = swarm[key] = successor(old, announce, now, values=_lean(announce, shared))
        if old is None or _handed_out_as(old) != _handed_out_as(new):
            self._changed(shared)
        if announce.event == "completed":
            self._downloaded[shared] = self._downloaded.get(shared, 0) + 1

    def swarm(self, info_hash: bytes, now: float) -> list[Announce]:
        cutoff = now - self.peer_ttl
        return [p for p in self._swarms.get(info_hash, {}).values() if not p.stopped and p.last_seen >= cutoff]

    def counts(self, info_hash: bytes, now: float) -> tuple[int, int, int]:
        live = self.swarm(info_hash, now)
        complete = sum(1 for a in live if a.left == 0)
        return complete, len(live) - complete, self._downloaded.get(info_hash, 0)

    def info_hashes(self) -> list[bytes]:
        return list(self._swarms)

    def records(self) -> Iterator[Peer]:
        for swarm in self._swarms.values():
            yield from swarm.values()

    def expire(self, now: float) -> int:
        gone = 0
        for info_hash in list(self._swarms):
            swarm = self._swarms[info_hash]
            for key in [k for k, p in swarm.items() if now - p.last_seen > self.retain]:
                del swarm[key]
                gone += 1
                self._changed(info_hash)
            if not swarm:
                del self._swarms[info_hash], self._hashes[info_hash], self._changes[info_hash]
                self._downloaded.pop(info_hash, None)
        return gone


def _lean(a: Announce, info_hash: bytes) -> list:
    # Memory per peer: every record of a torrent shares one info-hash object, and texts many nodes
    # send alike are interned (the address: tills report their LAN ip, and store LANs reuse the
    # private ranges; store, role, class, release, ring).
    values = list(_kept_values(a))
    values[_INFO_HASH] = info_hash
    for i in _SHARED_TEXTS:
        if values[i] is not None:
            values[i] = intern(values[i])
    return values


_INFO_HASH = RECORD_FIELDS.index("info_hash")
_SHARED_TEXTS = [RECORD_FIELDS.index(name)
                 for name in ("ip", "store", "role", "device_class", "release", "ring")]


def _handed_out_as(peer: Peer) -> tuple:
    # What the hand-out policies and the answer read of a record; ``left`` only as complete or
    # not, so a downloading peer's progress does not throw the swarm's rankings away on every announce.
    a = peer.announce
    return peer.stopped, a.ip, a.port, a.peer_id, a.left == 0, a.role, a.store, a.node
