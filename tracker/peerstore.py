"""Who announced what and when: the PeerStore protocol and its in-memory implementation."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Protocol

from tracker.announce import Announce


@dataclasses.dataclass(frozen=True)
class Peer:
    """A node's last announce for one torrent, when it came, and whether it said ``stopped``."""

    announce: Announce
    last_seen: float
    stopped: bool = False


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
        self._swarms: dict[bytes, dict[str, Peer]] = {}
        self._by_address: dict[bytes, dict[tuple[str, int], str]] = {}
        self._downloaded: dict[bytes, int] = {}

    def record(self, announce: Announce, now: float) -> None:
        swarm = self._swarms.setdefault(announce.info_hash, {})
        addresses = self._by_address.setdefault(announce.info_hash, {})
        key, address = announce.node_key, (announce.ip, announce.port)
        # A plain client that restarts comes back with a fresh peer_id on the same ip:port; its
        # old record is a dead predecessor. Not so for posswarm nodes: behind a store's NAT many
        # tills share ip:port as the tracker sees it, and their node ids tell them apart.
        previous_key = addresses.get(address)
        if previous_key is not None and previous_key != key and announce.node is None:
            previous = swarm.get(previous_key)
            if previous is not None and previous.announce.node is None:
                del swarm[previous_key]
        old = swarm.get(key)
        if old is not None and (old.announce.ip, old.announce.port) != address:
            addresses.pop((old.announce.ip, old.announce.port), None)
        swarm[key] = Peer(announce, now, stopped=announce.event == "stopped")
        addresses[address] = key
        if announce.event == "completed":
            self._downloaded[announce.info_hash] = self._downloaded.get(announce.info_hash, 0) + 1

    def swarm(self, info_hash: bytes, now: float) -> list[Announce]:
        return [p.announce for p in self._swarms.get(info_hash, {}).values() if self._live(p, now)]

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
            swarm, addresses = self._swarms[info_hash], self._by_address[info_hash]
            for key in [k for k, p in swarm.items() if now - p.last_seen > self.retain]:
                peer = swarm.pop(key)
                if addresses.get((peer.announce.ip, peer.announce.port)) == key:
                    del addresses[(peer.announce.ip, peer.announce.port)]
                gone += 1
            if not swarm:
                del self._swarms[info_hash], self._by_address[info_hash]
                self._downloaded.pop(info_hash, None)
        return gone

    def _live(self, peer: Peer, now: float) -> bool:
        return not peer.stopped and now - peer.last_seen <= self.peer_ttl
