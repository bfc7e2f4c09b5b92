"""How often one client address may be refused a secret (an enrolment token, the operator token): a burst, then
one attempt per interval (pure: the caller passes a monotonic ``now``)."""

from __future__ import annotations

from collections import OrderedDict

BURST = 10  # a store's installer mistyping a few tokens is never held up
EVERY_S = 6.0  # then ten a minute: a 128-bit token is not guessed at that pace, nor central's disk worn by it
MAX_ADDRESSES = 10_000  # memory stays bounded under a flood from many addresses


class GuessLimit:
    """A token bucket per client address, spent only by refused attempts (a good token always goes through
    while the bucket holds one)."""

    def __init__(self, *, burst: int = BURST, every_s: float = EVERY_S, max_addresses: int = MAX_ADDRESSES) -> None:
        self.burst, self.every_s, self.max_addresses = burst, every_s, max_addresses
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # address -> (tokens, at)

    def _tokens(self, address: str, now: float) -> float:
        tokens, at = self._buckets.get(address, (float(self.burst), now))
        return min(float(self.burst), tokens + max(0.0, now - at) / self.every_s)

    def wait_s(self, address: str, now: float) -> float:
        """0 if ``address`` may try now, else the seconds until it may."""
        if address not in self._buckets:  # never refused, or forgotten: the common case, asked on every announce
            return 0.0
        tokens = self._tokens(address, now)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) * self.every_s

    def refused(self, address: str, now: float) -> None:
        self._buckets[address] = (self._tokens(address, now) - 1.0, now)
        self._buckets.move_to_end(address)
        while len(self._buckets) > self.max_addresses:
            self._buckets.popitem(last=False)  # the longest quiet: nearest to a full bucket anyway
