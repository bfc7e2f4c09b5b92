"""When a staged release may become what runs on a device: the rollout's ``activate`` and ``install.window`` (pure).

``activate`` is signed by central in the rollout: ``window`` (inside the device's next install window; at once
where none is configured), ``now``, or ``at 2026-12-02T02:00Z`` (from that UTC time on). The windows are
``wan.schedule``'s store-local weekly windows without a rate, parsed by posswarm/wan_window.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from posswarm import wan_window
from posswarm.errors import PosswarmError

NOW = "now"
WINDOW = "window"
AT = "at "
MAX_ACTIVATE = 64


def check_activate(text: str) -> str:
    """``text`` when it is an activate value; PosswarmError saying the three forms otherwise."""
    if text in (NOW, WINDOW) or (text.startswith(AT) and len(text) <= MAX_ACTIVATE and _at(text) is not None):
        return text
    raise PosswarmError(f"activate {text[:MAX_ACTIVATE]!r}: use 'now', 'window' or 'at YYYY-MM-DDTHH:MMZ' (UTC)")


def _at(text: str) -> float | None:
    try:
        when = datetime.fromisoformat(text[len(AT):].strip())
    except ValueError:
        return None
    if when.tzinfo is None or when.utcoffset() != timedelta(0):
        return None  # a time in some zone nobody named: only UTC is unambiguous for every store
    return when.timestamp()


def windows_of(entries: tuple[str, ...]) -> list[wan_window.Window]:
    return [wan_window.parse(e, source="install.window", rate=False) for e in entries]


def why_not_now(activate: str, windows: list[wan_window.Window], local: datetime) -> str | None:
    """None when a release may activate at store-local time ``local`` (timezone-aware), else why it waits."""
    if activate == NOW:
        return None
    if activate.startswith(AT):
        at = _at(activate)
        if at is None or local.timestamp() >= at:
            return None if at is not None else f"activate {activate!r} is not a time; it waits for a new rollout"
        shown = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M UTC")
        return f"activates at {shown} (central's rollout: {activate})"
    minute = local.hour * 60 + local.minute
    if not windows or any(w.covers(local.weekday(), minute) for w in windows):
        return None
    opens = next_opening(windows, local)
    return f"waits for its install window (opens {opens.strftime('%a %Y-%m-%d %H:%M')} store time)"


def next_opening(windows: list[wan_window.Window], local: datetime) -> datetime:
    """The first store-local start of one of ``windows`` after ``local``."""
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    starts = [midnight + timedelta(days=d, minutes=w.start_min) for d in range(8) for w in windows
              if (local.weekday() + d) % 7 in w.days]
    return min(s for s in starts if s > local)


def seconds_to_change(windows: list[wan_window.Window], local: datetime) -> float:
    """Seconds from ``local`` to the next opening or closing of a window (a driver sleeps at most this long)."""
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    edges = [midnight + timedelta(days=d, minutes=m) for d in range(-1, 8) for w in windows
             for m in (w.start_min, w.end_min + (24 * 60 if w.end_min <= w.start_min else 0))]
    later = [e for e in edges if e > local]
    return (min(later) - local).total_seconds() if later else 86400.0
