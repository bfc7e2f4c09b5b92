"""The tracker's answer to one announce or scrape, whichever transport (HTTP or UDP) carried it."""

from __future__ import annotations

import dataclasses
import random

from tracker import handout
from tracker.access import Access
from tracker.announce import Announce
from tracker.config import TrackerConfig
from tracker.peerstore import PeerStore


@dataclasses.dataclass(frozen=True)
class AnnounceAnswer:
    interval: int
    min_interval: int
    complete: int
    incomplete: int
    peers: list[tuple[str, int, bytes]]  # (ip, port, peer_id)


class Desk:
    """Admits, records and answers; raises announce.BadRequest for anything refused."""

    def __init__(self, config: TrackerConfig, store: PeerStore, access: Access, *, rng: random.Random | None = None):
        self.config, self.store, self.access = config, store, access
        self._rank = handout.policy(config.policy)
        self._rng = rng

    def announce(self, a: Announce, passkey: str | None, now: float) -> AnnounceAnswer:
        a = self.access.admit(a, passkey)
        self.store.record(a, now)
        peers: list[tuple[str, int, bytes]] = []
        live = self.store.swarm(a.info_hash, now)
        if a.event != "stopped":
            chosen = handout.hand_out(
                self._rank,
                a,
                live,
                numwant=self.config.numwant if a.numwant is None else a.numwant,
                cross_store=self.config.cross_store,
                rng=self._rng,
            )
            peers = [(p.ip, p.port, p.peer_id) for p in chosen]
        complete = sum(1 for p in live if p.left == 0)
        return AnnounceAnswer(self.config.interval, self.config.effective_min_interval, complete, len(live) - complete,
                              peers)

    def scrape(self, info_hashes: list[bytes], passkey: str | None, now: float) -> dict[bytes, tuple[int, int, int]]:
        """{info_hash: (complete, incomplete, downloaded)} of the asked (or, with none asked, all) torrents we track."""
        wanted = self.access.scrapeable(info_hashes, passkey)
        known = set(self.store.info_hashes())
        # BEP 48: no info_hash = every torrent; unknown hashes are simply absent from ``files``.
        return {h: self.store.counts(h, now) for h in (wanted if wanted is not None else sorted(known)) if h in known}
