"""The tracker's answer to one announce or scrape, whichever transport (HTTP or UDP) carried it."""

from __future__ import annotations

import dataclasses
import random

from posswarm.identity.certificate import CertifiedNode
from tracker import handout, isolation, node_auth
from tracker.access import Access
from tracker.announce import Announce, BadRequest
from tracker.config import TrackerConfig
from tracker.isolation import CENTRAL
from tracker.peerstore import PeerStore
from tracker.store_caches import StoreCaches

REFRESH = 1.0  # seconds a swarm's ranked hand-out lists are reused while its membership stands still
SWEEP_EVERY = 4096  # rebuilds between sweeps of cached swarms that went stale


@dataclasses.dataclass(frozen=True)
class AnnounceAnswer:
    interval: int
    min_interval: int
    complete: int
    incomplete: int
    handed: handout.Handed

    @property
    def peers(self) -> list[tuple[str, int, bytes]]:
        """(ip, port, peer_id) of every peer handed out, for non-compact answers."""
        return self.handed.peers()


class _Swarm:
    """One torrent's live peers as of ``built``, and its rankings by (requester role, requester store)."""

    __slots__ = ("built", "changes", "live", "stores", "complete", "ranked")

    def __init__(self, built: float, changes: int, live: list[Announce]) -> None:
        self.built, self.changes, self.live = built, changes, live
        self.stores = isolation.Stores(live)
        self.complete = sum(1 for p in live if p.left == 0)
        self.ranked: dict[tuple[str | None, str | None], handout.Ranked] = {}


class Desk:
    """Admits, records and answers; raises announce.BadRequest for anything refused.

    Ranking the whole swarm on every announce was half the tracker's time, so a swarm's live list
    and rankings are kept for up to ``REFRESH`` seconds. A store that counts its changes
    (``MemoryPeerStore.changes``) drops them at once when a peer joins, leaves, completes or moves;
    otherwise (the Redis store, shared with other trackers) every announce reads the store afresh.
    """

    def __init__(self, config: TrackerConfig, store: PeerStore, access: Access, *, rng: random.Random | None = None):
        self.config, self.store, self.access = config, store, access
        self._rank = handout.policy(config.policy)
        self._rng = rng
        self._changes = getattr(store, "changes", None)
        self._swarms: dict[bytes, _Swarm] = {}
        self._rebuilds = 0
        self.caches = StoreCaches(max_stores=max(1, config.max_records // 4))

    def announce(self, a: Announce, passkey: str | None, now: float, node: CertifiedNode | None = None
                 ) -> AnnounceAnswer:
        a = self.access.admit(a, passkey, now, node)
        self.store.record(a, now)
        self.caches.note(a, now + self.config.effective_peer_ttl, now)
        swarm = self._swarm(a.info_hash, now)
        handed = handout.NOBODY
        if a.event != "stopped":
            ranked = swarm.ranked.get((a.role, a.store))
            if ranked is None:
                requester = handout.Requester.of(a)
                # Isolation first, the policy second: a policy only orders what the requester may see.
                allowed = isolation.visible_to(requester, swarm.stores, cross_store=self.config.cross_store)
                ranked = swarm.ranked[(a.role, a.store)] = handout.Ranked(self._rank, requester, allowed, rng=self._rng)
            handed = ranked.cut(a, self.config.numwant if a.numwant is None else a.numwant)
        return AnnounceAnswer(self.config.interval, self.config.effective_min_interval, swarm.complete,
                              len(swarm.live) - swarm.complete, handed)

    def _swarm(self, info_hash: bytes, now: float) -> _Swarm:
        if self._changes is None:
            return _Swarm(now, 0, self.store.swarm(info_hash, now))
        changes = self._changes(info_hash)
        swarm = self._swarms.get(info_hash)
        if swarm is None or swarm.changes != changes or not swarm.built <= now < swarm.built + REFRESH:
            self._rebuilds += 1
            if self._rebuilds % SWEEP_EVERY == 0:  # torrents nobody announces any more leave no cache behind
                self._swarms = {h: s for h, s in self._swarms.items() if s.built <= now < s.built + REFRESH}
            swarm = self._swarms[info_hash] = _Swarm(now, changes, self.store.swarm(info_hash, now))
        return swarm

    def store_caches(self, passkey: str | None, store: str | None, address: str, now: float,
                     node: CertifiedNode | None = None) -> list[tuple[str, int]]:
        """The caches of the asker's store (its certificate's, else its passkey's; in open mode the ``store=`` it names)."""
        if node is not None:
            store = node_auth.caches_store(store, node)
        elif not self.access.open:
            store = self.access.store_of(passkey, address, now)
        if store is None or store == CENTRAL:
            raise BadRequest("ask /caches for a store: with its passkey (/caches/<passkey>), or store=<id> when open")
        return self.caches.of(store, now)

    def scrape(self, info_hashes: list[bytes], passkey: str | None, now: float, address: str,
               node: CertifiedNode | None = None) -> dict[bytes, tuple[int, int, int]]:
        """{info_hash: (complete, incomplete, downloaded)} of the asked (or, with none asked, all) torrents we track."""
        wanted = self.access.scrapeable(info_hashes, passkey, address, now, node)
        known = set(self.store.info_hashes())
        # BEP 48: no info_hash = every torrent; unknown hashes are simply absent from ``files``.
        return {h: self.store.counts(h, now) for h in (wanted if wanted is not None else sorted(known)) if h in known}
