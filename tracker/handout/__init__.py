"""Peer hand-out: policies chosen by name, and the sample-rank-cut step around them."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from posswarm.errors import PosswarmError
from tracker.announce import Announce
from tracker.handout import completeness, store_first

# rank(requester, candidates, *, cross_store) -> candidates it may see, best first
Policy = Callable[..., list[Announce]]

POLICIES: dict[str, Policy] = {
    "store-first": store_first.rank,
    "completeness": completeness.rank,
}


def policy(name: str) -> Policy:
    """The policy called ``name``; PosswarmError (at start-up) for a name we do not have."""
    try:
        return POLICIES[name]
    except KeyError:
        raise PosswarmError(f"hand-out policy {name!r} does not exist (choose one of: {', '.join(POLICIES)})") from None


def hand_out(
    rank: Policy,
    requester: Announce,
    candidates: Sequence[Announce],
    *,
    numwant: int,
    cross_store: bool = False,
    rng: random.Random | None = None,
) -> list[Announce]:
    """At most ``numwant`` peers for ``requester``, never itself, ordered by ``rank``.

    Candidates are shuffled first and policies sort stably, so peers a policy ranks equal
    share the load instead of the first announcer getting every connection.
    """
    me, node = (requester.ip, requester.port), requester.node
    others = [c for c in candidates if (c.ip, c.port) != me and (node is None or c.node != node)]
    # Sorting on a random key is a shuffle at C speed: this runs on every announce.
    others.sort(key=lambda _c, r=(rng or random).random: r())
    return rank(requester, others, cross_store=cross_store)[:numwant]
