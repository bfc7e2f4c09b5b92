"""The high-water-mark rule: how far one till's run of seqs is stored without a gap (pure, no I/O).

A mark ``m`` for ``(device_id, incarnation)`` promises that seqs 1..m are all stored. The ledger
moves it with :func:`advance` and acks it; tills forget what it covers; it never goes back.
"""

from __future__ import annotations

from collections.abc import Iterable


def advance(mark: int, stored_after: Iterable[int]) -> int:
    """``mark`` moved over every seq that follows it without a gap.

    ``stored_after``: the stored seqs above ``mark``, ascending. A gap holds the mark back, so a
    till acked up to it still resends the sale that is missing.
    """
    for seq in stored_after:
        if seq != mark + 1:
            break
        mark = seq
    return mark


def covers(mark: int | None, seq: int) -> bool:
    """Whether a sale with ``seq`` is stored according to ``mark`` (``None``: no mark yet)."""
    return mark is not None and seq <= mark


def later(held: int | None, offered: int) -> int:
    """The mark to keep when ``offered`` arrives: marks never go back (a late, older ack changes nothing)."""
    return offered if held is None else max(held, offered)
