"""Hand-out policy "store-first": a device's store cache first; a cache's central seeders first."""

from __future__ import annotations

from collections.abc import Sequence

from tracker.handout import C, Candidate, Requester


def rank(requester: Requester, candidates: Sequence[C]) -> list[C]:
    """``candidates`` best first (stable within a tier); which peers are candidates is the isolation rule's call.

    device   -> its store cache, then complete peers, then the rest.
    cache    -> central seeders, then its own store's peers, then other stores' caches.
    seeder   -> other seeders, then caches, then the rest.
    no role  -> a standard BitTorrent client: seeders, then complete peers, then the rest.
    """
    tier = _TIERS.get(requester.role, _plain)
    return sorted(candidates, key=lambda c: tier(requester, c))


def _device(me: Requester, peer: Candidate) -> int:
    return 0 if peer.role == "cache" else 1 if peer.left == 0 else 2


def _cache(me: Requester, peer: Candidate) -> int:
    return 0 if peer.role == "seeder" else 1 if peer.store == me.store else 2


def _seeder(me: Requester, peer: Candidate) -> int:
    return {"seeder": 0, "cache": 1}.get(peer.role, 2)


def _plain(me: Requester, peer: Candidate) -> int:
    return 0 if peer.role == "seeder" else 1 if peer.left == 0 else 2


_TIERS = {"device": _device, "cache": _cache, "seeder": _seeder}
