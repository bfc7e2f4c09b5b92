"""Replay window over each sender's frame counter: highest seen plus a bitmap of the last 1024."""

from __future__ import annotations

from collections import OrderedDict

WINDOW = 1024
# Senders tracked at once; far above a store's tens of nodes. The least recently heard
# is forgotten first; its old frames could then replay, which the idempotent sales and
# SKU merges make harmless.
MAX_SENDERS = 4096


class ReplayWindow:
    """Accept each ``(sender, counter)`` once, tolerating reordering within WINDOW (as IPsec/WireGuard).

    Counter restarts: there is no reset rule. A sender id names one run of its counter, so a
    node mints a fresh sender id each time its counter starts again (the driver appends a
    random boot id: ``till-07/3f9a...``). Accepting a counter reset on the sender's say-so
    would let anyone replaying an old frame first replay a "reset".
    Call only with authenticated frames, or a forger could move the window.
    """

    def __init__(self, window: int = WINDOW, max_senders: int = MAX_SENDERS) -> None:
        self._window = window
        self._mask = (1 << window) - 1
        self._max_senders = max_senders
        # sender -> (highest counter, bitmap: bit i set = highest - i seen)
        self._seen: OrderedDict[str, tuple[int, int]] = OrderedDict()

    def accept(self, sender: str, counter: int) -> bool:
        """True the first time this counter arrives from ``sender``; False for a replay or one too old."""
        state = self._seen.get(sender)
        if state is None:
            highest, bitmap = counter, 1
        else:
            highest, bitmap = state
            if counter > highest:
                shift = counter - highest
                # A big jump clears the bitmap; never shift by an attacker-sized number.
                bitmap = ((bitmap << shift) | 1) & self._mask if shift < self._window else 1
                highest = counter
            else:
                behind = highest - counter
                if behind >= self._window or bitmap >> behind & 1:
                    return False
                bitmap |= 1 << behind
        self._seen[sender] = (highest, bitmap)
        self._seen.move_to_end(sender)
        if len(self._seen) > self._max_senders:
            self._seen.popitem(last=False)
        return True
