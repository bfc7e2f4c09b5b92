"""Hand-out policy "completeness": seeders first, then the peers with the least left to fetch."""

from __future__ import annotations

from collections.abc import Sequence

from tracker.handout import C, Requester


def rank(requester: Requester, candidates: Sequence[C]) -> list[C]:
    """Every candidate, ordered by bytes left (0 = complete), central seeders ahead of equals.

    Ignores stores (the tracker's isolation rule has already kept only what the requester may see):
    this is the plain-swarm baseline the benchmarks compare store-first against.
    """
    return sorted(candidates, key=lambda c: (c.left, c.role != "seeder"))
