"""Hand-out policy "completeness": seeders first, then the peers with the least left to fetch."""

from __future__ import annotations

from collections.abc import Sequence

from tracker.announce import Announce


def rank(requester: Announce, candidates: Sequence[Announce], *, cross_store: bool = False) -> list[Announce]:
    """Every candidate, ordered by bytes left (0 = complete), central seeders ahead of equals.

    Ignores stores entirely (``cross_store`` is accepted for a uniform signature): this is
    the plain-swarm baseline the benchmarks compare store-first against.
    """
    return sorted(candidates, key=lambda c: (c.left, c.role != "seeder"))
