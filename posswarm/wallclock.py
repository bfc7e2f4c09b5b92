"""Wall-clock milliseconds: the unit of sale times, heartbeats and SKU clocks."""

from __future__ import annotations

import time


def now_ms() -> int:
    return int(time.time() * 1000)
