"""Who announced what and when: the PeerStore protocol and its in-memory implementation."""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable, Iterator
from sys import intern
from typing import Protocol

from tracker.announce import Announce, BadRequest, compact_peer


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
    lan_ip: str | None
    catalog_port: int | None
    central_expires: int | None
    state: str | None
    slot: str | None
    boot: str | None
    boot_reason: str | None
    certified: bool
    last_seen: float
    stopped: bool = False
    progressed: float | None = None  # last time ``left``, ``installed`` or ``state`` changed; None = last_seen
    live_until: float = 0.0  # handed out until then: three of its own re-announce gaps (see ``lifetime``)

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
RECORD_FIELDS = tuple(f.name for f in dataclasses.fields(Peer)
                      if f.name not in ("last_seen", "stopped", "progressed", "live_until"))
_kept_values = operator.attrgetter(*RECORD_FIELDS)


def peer_key(announce: Announce) -> str | bytes:
    """Whose record an announce replaces: a posswarm node by store and node id, a plain client by store and ip:port.

    The store is part of the key (Access placed the announce in its passkey's store), so store B,
    which can read store A's node ids on /stats, still cannot replace store A's records. A record
    placed by a node certificate is keyed apart (NUL) from a passkey announce naming the same node
    (SOH): only the certificate's own node can replace it.

    A plain client that restarts comes back with a fresh peer_id on the same ip:port, and its old
    record is a dead predecessor, so the address is the identity (as opentracker has it). Not so for
    posswarm nodes: behind a store's NAT many tills share ip:port as the tracker sees it, and their
    node ids tell them apart. The address is kept in its compact 6/18-byte form: the smallest key.
    """
    store = announce.store
    if announce.node is not None:
        if store is None:
            return announce.node
        return f"{store}\0{announce.node}" if announce.certified else f"{store}\1{announce.node}"  # printable: no NUL/SOH
    address = compact_peer(announce.ip, announce.port)
    return address if store is None else store.encode() + b"\0" + address


@dataclasses.dataclass(frozen=True)
class Lifetimes:
    """How long a quiet peer stays in the hand-out: ``peer_ttl`` at least, ``max_peer_ttl`` at most.

    Within those, three of the peer's own re-announce gaps: transmission follows the tracker's
    interval, rtorrent re-announces every 600 s whatever it is told, and both must stay in the swarm.
    A standard client's gap is unknown until its second announce, so its first one keeps it for
    ``max_peer_ttl``; a posswarm node (it sends ``node=``) follows the interval, so ``peer_ttl`` then.
    """

    peer_ttl: float
    max_peer_ttl: float

    def live_until(self, old: Peer | None, announce: Announce, now: float) -> float:
        if announce.event == "stopped":
            return now
        if old is not None and not old.stopped:
            if announce.event == "":  # a routine re-announce: the gap since the last one is its cadence
                ttl = 3 * (now - old.last_seen)
            else:  # started/completed come at any moment (completed right after a download): keep the cadence
                ttl = old.live_until - old.last_seen
        else:
            ttl = self.peer_ttl if announce.node is not None else self.max_peer_ttl
        return now + min(self.max_peer_ttl, max(self.peer_ttl, ttl))


def successor(old: Peer | None, announce: Announce, now: float, lifetimes: Lifetimes, *,
              values: list | None = None) -> Peer:
    """The record that replaces ``old`` (this node's previous record of the torrent) after ``announce``.

    ``values`` = the kept fields of the announce as the record should hold them (default: as they came).
    """
    moved = old is None or (old.left, old.installed, old.state) != (announce.left, announce.installed, announce.state)
    return Peer(*(_kept_values(announce) if values is None else values), last_seen=now,
                stopped=announce.event == "stopped", progressed=now if moved else old.progressed_at,
                live_until=lifetimes.live_until(old, announce, now))


def live(peer: Peer, now: float) -> bool:
    """Is ``peer`` handed out as of ``now``? Announced within its lifetime and not stopped."""
    return not peer.stopped and now <= peer.live_until


class RecordsFull(BadRequest):
    """A new record would pass a cap; the message names the cap and the key that raises it."""


@dataclasses.dataclass(frozen=True)
class Caps:
    """Bounds on retained records: in all, and per store (a passkey is one store; central has its own)."""

    max_records: int = 1_000_000
    max_records_per_store: int = 10_000

    def check(self, total: int, in_store: int, store: str | None) -> None:
        if total >= self.max_records:
            raise RecordsFull(f"the tracker holds {total} records, its limit (max_records = {self.max_records}); "
                              "quiet ones are freed after their TTL, or raise max_records")
        if store is not None and in_store >= self.max_records_per_store:
            raise RecordsFull(f"store {store} has {in_store} records on this tracker, its limit "
                              f"(max_records_per_store = {self.max_records_per_store}); quiet ones are freed "
                              "after their TTL, or raise the limit if the store really runs that many")


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


EVICT_EVERY = 5.0  # seconds between scans for quiet records to free when a cap is reached (a scan reads every record)


class Admission:
    """Whether a new record may be kept: under the caps, after freeing quiet records (at most every EVICT_EVERY s).

    A random node= on every announce must not grow the tracker without bound: new records stop at
    the caps; records no longer handed out (kept only for /stats) are freed to make room first.
    """

    def __init__(self, caps: Caps) -> None:
        self.caps = caps
        self._freed_at = float("-inf")

    def admit(self, store: str | None, now: float, counts: Callable[[], tuple[int, int]],
              free_quiet: Callable[[], object]) -> None:
        """RecordsFull unless a record may be added; ``counts()`` = (records in all, records of ``store``)."""
        try:
            self.caps.check(*counts(), store)
        except RecordsFull:
            if now - self._freed_at < EVICT_EVERY:
                raise
            self._freed_at = now
            free_quiet()
            self.caps.check(*counts(), store)


class MemoryPeerStore:
    """PeerStore in a dict: one process, lost on restart (nodes re-announce within an interval)."""

    def __init__(self, *, peer_ttl: float, retain: float, max_peer_ttl: float | None = None,
                 caps: Caps | None = None) -> None:
        self.peer_ttl = peer_ttl
        self.lifetimes = Lifetimes(peer_ttl, max(peer_ttl, max_peer_ttl if max_peer_ttl is not None else peer_ttl))
        self.retain = max(retain, self.lifetimes.max_peer_ttl)
        self.admission = Admission(caps or Caps())
        self._swarms: dict[bytes, dict[str | bytes, Peer]] = {}
        self._hashes: dict[bytes, bytes] = {}
        self._downloaded: dict[bytes, int] = {}
        self._changes: dict[bytes, int] = {}  # info_hash -> the store's change count at its last change
        self._change_count = 0
        self._total = 0
        self._per_store: dict[str, int] = {}

    def changes(self, info_hash: bytes) -> int:
        """A number that moves whenever a torrent's hand-out could: a peer joins, stops, expires or completes.

        Drawn from one store-wide count, so a torrent that expires and comes back never repeats a number.
        """
        return self._changes.get(info_hash, 0)

    def _changed(self, info_hash: bytes) -> None:
        self._change_count += 1
        self._changes[info_hash] = self._change_count

    def record(self, announce: Announce, now: float) -> None:
        key = peer_key(announce)
        swarm = self._swarms.get(announce.info_hash)
        old = swarm.get(key) if swarm is not None else None
        if old is None:
            self._admit_new(announce.store, now)
        shared = self._hashes.setdefault(announce.info_hash, announce.info_hash)
        swarm = self._swarms.setdefault(shared, {})
        new = swarm[key] = successor(old, announce, now, self.lifetimes, values=_lean(announce, shared))
        if old is None or _handed_out_as(old) != _handed_out_as(new):
            self._changed(shared)
        if announce.event == "completed":
            self._downloaded[shared] = self._downloaded.get(shared, 0) + 1

    def _admit_new(self, store: str | None, now: float) -> None:
        self.admission.admit(store, now, lambda: (self._total, self._per_store.get(store, 0)),
                             lambda: self._forget(lambda p: not live(p, now)))
        self._total += 1
        if store is not None:
            self._per_store[store] = self._per_store.get(store, 0) + 1

    def swarm(self, info_hash: bytes, now: float) -> list[Announce]:
        return [p for p in self._swarms.get(info_hash, {}).values() if not p.stopped and now <= p.live_until]

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
        return self._forget(lambda p: now - p.last_seen > self.retain)

    def _forget(self, old: Callable[[Peer], bool]) -> int:
        gone = 0
        for info_hash in list(self._swarms):
            swarm = self._swarms[info_hash]
            for key in [k for k, p in swarm.items() if old(p)]:
                store = swarm.pop(key).store
                gone += 1
                self._total -= 1
                if store is not None:
                    self._per_store[store] -= 1
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
                 for name in ("ip", "store", "role", "device_class", "release", "ring", "lan_ip", "state", "boot")]


def _handed_out_as(peer: Peer) -> tuple:
    # What the hand-out policies and the answer read of a record; ``left`` only as complete or
    # not, so a downloading peer's progress does not throw the swarm's rankings away on every announce.
    a = peer.announce
    return peer.stopped, a.ip, a.lan_ip, a.port, a.peer_id, a.left == 0, a.role, a.store, a.node
