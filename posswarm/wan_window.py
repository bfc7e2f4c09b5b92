"""Weekly WAN windows: how fast a store may use its WAN link at a given store-local time (pure).

A window is ``DAYS HH:MM-HH:MM KBPS``: ``mon-fri 08:00-20:00 4000`` caps WAN traffic at 4,000 kbit/s
on weekday trading hours, when card payments share the link. DAYS is ``daily``, a day (``sat``), a
range (``mon-fri``) or a list (``sat,sun``); a window may cross midnight (``22:00-06:00`` starts on the
named day). Where windows overlap the lowest cap wins; outside every window the node's base caps apply.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from posswarm.errors import PosswarmError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WINDOW = re.compile(r"^\s*(\S+)\s+(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})(?:\s+(\d+))?\s*$")


@dataclass(frozen=True)
class Window:
    days: frozenset[int]  # 0 = Monday
    start_min: int  # minutes after midnight
    end_min: int  # may be <= start_min: the window runs past midnight
    kbps: int

    def covers(self, weekday: int, minute: int) -> bool:
        if self.start_min < self.end_min:
            return weekday in self.days and self.start_min <= minute < self.end_min
        # past midnight: the evening part on a named day, the morning part on the day after one
        return (weekday in self.days and minute >= self.start_min) or (
            (weekday - 1) % 7 in self.days and minute < self.end_min)


def parse(text: str, *, source: str = "wan.schedule", rate: bool = True) -> Window:
    """One window from its text; PosswarmError names the entry and shows the expected form. ``rate=False``:
    a window without the kbit/s (install.window: when, not how fast)."""
    found = _WINDOW.match(text)
    if not found or (found.group(6) is None) == rate:
        form = "'mon-fri 08:00-20:00 4000' (days, store-local times, kbit/s)" if rate else (
            "'daily 02:00-04:00' (days, store-local times)")
        raise PosswarmError(f"{source}: {text!r} is not a window; write e.g. {form}")
    days_text, h1, m1, h2, m2, kbps = found.groups()
    start, end = int(h1) * 60 + int(m1), int(h2) * 60 + int(m2)
    if int(h1) > 23 or int(m1) > 59 or int(h2) > 24 or int(m2) > 59 or end > 24 * 60 or start == end:
        raise PosswarmError(f"{source}: {text!r} has a bad time range; use HH:MM-HH:MM, 00:00-24:00 at most")
    return Window(_days(days_text, text, source), start, end, int(kbps or 0))


def _days(text: str, entry: str, source: str) -> frozenset[int]:
    if text.lower() == "daily":
        return frozenset(range(7))
    days: set[int] = set()
    for part in text.lower().split(","):
        first, _, last = part.partition("-")
        if first not in DAYS or (last and last not in DAYS):
            raise PosswarmError(f"{source}: {entry!r}: days are daily, {', '.join(DAYS)}, ranges (mon-fri) or lists")
        a, b = DAYS.index(first), DAYS.index(last or first)
        days.update(range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)])
    return frozenset(days)


def cap_at(windows: list[Window], local: datetime, base_kbps: int) -> int:
    """The WAN cap in kbit/s at store-local time ``local`` (0 = none)."""
    minute = local.hour * 60 + local.minute
    caps = [w.kbps for w in windows if w.covers(local.weekday(), minute)]
    if not caps:
        return base_kbps
    lowest = min(caps)
    return lowest if base_kbps == 0 else min(lowest, base_kbps)

