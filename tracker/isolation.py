"""Store isolation, the tracker's own rule: which recorded peers an announcer may be handed at all, before any policy ranks them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from tracker.handout import Candidate, Requester

CENTRAL = "central"  # the store of every central-credentialed record (the seeders); no store passkey may be named so

C = TypeVar("C", bound=Candidate)


def visible(requester: Requester, peer: Candidate, *, cross_store: bool) -> bool:
    """May ``requester`` be handed ``peer``? The whole rule, whatever the hand-out policy.

    central (a seeder)  -> every peer but devices (devices never talk to central).
    device              -> its own store's peers only: never central, never another store.
    cache, plain client -> its own store's peers and central's seeders; a cache also other stores'
                           caches when the tracker runs with ``cross_store``.
    A plain client placed in no store (open mode) is a "store" of its own: the other storeless clients.
    """
    if requester.store == CENTRAL:
        return peer.role != "device"
    if peer.store == requester.store:
        return True
    if peer.store == CENTRAL:
        return requester.role != "device"
    return cross_store and requester.role == "cache" and peer.role == "cache"


class Stores:
    """A swarm's peers grouped by store, so a requester's share is its groups, not a pass over every peer.

    A release's swarm holds every store's nodes (40,000 in a chain of 1,000 stores); each store's
    devices and cache are ranked apart, so filtering the whole swarm per store would cost the
    swarm's size a thousand times a second.
    """

    __slots__ = ("peers", "_by_store", "_caches")

    def __init__(self, peers: Sequence[C]) -> None:
        self.peers = peers
        self._by_store: dict[str | None, list[C]] | None = None
        self._caches: list[C] = []

    def of(self, store: str | None) -> list[C]:
        if self._by_store is None:
            self._by_store = {}
            for p in self.peers:
                self._by_store.setdefault(p.store, []).append(p)
            self._caches = [p for p in self.peers if p.role == "cache"]
        return self._by_store.get(store, [])

    def caches(self) -> list[C]:
        self.of(None)
        return self._caches


def visible_to(requester: Requester, stores: Stores, *, cross_store: bool) -> list[C]:
    """The peers ``requester`` may be handed: exactly those ``visible`` allows, found by store."""
    if requester.store == CENTRAL:
        return [p for p in stores.peers if p.role != "device"]
    share = list(stores.of(requester.store))
    if requester.role != "device":
        share += stores.of(CENTRAL)
    if cross_store and requester.role == "cache":
        share += [p for p in stores.caches() if p.store not in (requester.store, CENTRAL)]
    return share
