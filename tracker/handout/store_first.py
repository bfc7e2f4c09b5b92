"""Hand-out policy "store-first": devices see only their store; caches see central first."""

from __future__ import annotations

from collections.abc import Sequence

from tracker.announce import Announce


def rank(requester: Announce, candidates: Sequence[Announce], *, cross_store: bool = False) -> list[Announce]:
    """Candidates ``requester`` may connect to, best first (stable within a tier).

    device   -> its store's peers only, the store cache first, then complete peers; never
                seeders (the WAN is the cache's job) and never another store.
    cache    -> central seeders, then its own store's peers, then (only with ``cross_store``)
                other stores' caches; never another store's devices.
    seeder   -> other seeders, then caches; devices never talk to central.
    no role  -> a standard BitTorrent client: everyone, seeders and complete peers first.
    """
    tiers = [(t, c) for c in candidates if (t := _tier(requester, c, cross_store)) is not None]
    return [c for _, c in sorted(tiers, key=lambda tc: tc[0])]


def _tier(me: Announce, peer: Announce, cross_store: bool) -> int | None:
    same_store = peer.store is not None and peer.store == me.store
    if me.role == "device":
        if not same_store or peer.role == "seeder":
            return None
        return 0 if peer.role == "cache" else 1 if peer.left == 0 else 2
    if me.role == "cache":
        if peer.role == "seeder":
            return 0
        if same_store:
            return 1
        return 2 if cross_store and peer.role == "cache" else None
    if me.role == "seeder":
        return {"seeder": 0, "cache": 1}.get(peer.role)
    return 0 if peer.role == "seeder" else 1 if peer.left == 0 else 2
