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


def visible_to(requester: Requester, peers: Sequence[C], *, cross_store: bool) -> list[C]:
    """The peers ``requester`` may be handed, in their order."""
    return [p for p in peers if visible(requester, p, cross_store=cross_store)]
