"""Hybrid logical clock packed in a u64: 48 bits of wall-clock ms, 16 bits of counter."""

from __future__ import annotations

from posswarm.errors import PosswarmError

COUNTER_BITS = 16
COUNTER_MASK = (1 << COUNTER_BITS) - 1
# Bounded to 63 bits in all so an HLC fits SQLite's signed INTEGER; ms < 2^47 is the year 6429.
MAX_HLC = (1 << 63) - 1
# One peer with a fast clock would drag every HLC forward and win every write until real
# time caught up (notes/gossip-mdns.md §2), so refuse anything further ahead than this.
MAX_SKEW_MS = 60_000


class ClockSkew(PosswarmError):
    """A remote HLC too far ahead of our wall clock: one of the two clocks is wrong."""


def pack(ms: int, counter: int = 0) -> int:
    return (ms << COUNTER_BITS) | counter


def unpack(hlc: int) -> tuple[int, int]:
    """``(ms, counter)``."""
    return hlc >> COUNTER_BITS, hlc & COUNTER_MASK


class Clock:
    """One node's HLC (Kulkarni et al. 2014); time is passed in, never read.

    Because the counter is the low 16 bits, "ms stays, counter + 1" is plain ``+ 1``; a
    counter overflow (65,536 events in one ms) carries into the ms, staying monotonic.
    ``last`` restores the clock after a restart (e.g. the highest HLC in the replica).
    """

    def __init__(self, last: int = 0) -> None:
        self.last = last

    def now(self, wall_ms: int) -> int:
        """A fresh timestamp for a local event, greater than every one before it."""
        self.last = max(self.last + 1, pack(wall_ms))
        return self.last

    def observe(self, remote: int, wall_ms: int) -> int:
        """Merge a received timestamp; raise :class:`ClockSkew` if it is > MAX_SKEW_MS ahead of ``wall_ms``."""
        if type(remote) is not int or not 0 <= remote <= MAX_HLC:
            raise ClockSkew(f"hlc {remote!r}: not a valid timestamp (corrupt sender?)")
        ahead = unpack(remote)[0] - wall_ms
        if ahead > MAX_SKEW_MS:
            raise ClockSkew(
                f"hlc {remote}: {ahead} ms ahead of our clock (limit {MAX_SKEW_MS} ms);"
                " check NTP on the sender and on this node"
            )
        self.last = max(self.last + 1, remote + 1, pack(wall_ms))
        return self.last
