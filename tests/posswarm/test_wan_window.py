"""WAN windows: store-local weekly caps, overlapping and past-midnight windows, one-line errors."""

from __future__ import annotations

from datetime import datetime

import pytest

from posswarm.errors import PosswarmError
from posswarm.wan_window import cap_at, parse

WED_NOON = datetime(2026, 11, 25, 12, 0)  # a Wednesday
SAT_NOON = datetime(2026, 11, 28, 12, 0)


def test_trading_hours_are_capped_and_nights_are_free():
    windows = [parse("mon-fri 08:00-20:00 4000")]
    assert cap_at(windows, WED_NOON, 0) == 4000
    assert cap_at(windows, datetime(2026, 11, 25, 20, 0), 0) == 0
    assert cap_at(windows, datetime(2026, 11, 25, 7, 59), 0) == 0
    assert cap_at(windows, SAT_NOON, 0) == 0


def test_the_lowest_cap_wins_and_the_base_cap_still_holds():
    windows = [parse("daily 00:00-24:00 20000"), parse("sat,sun 10:00-16:00 2000")]
    assert cap_at(windows, SAT_NOON, 0) == 2000
    assert cap_at(windows, WED_NOON, 0) == 20000
    assert cap_at(windows, WED_NOON, 8000) == 8000
    assert cap_at([], WED_NOON, 8000) == 8000


def test_a_window_past_midnight_belongs_to_the_day_it_starts():
    night = [parse("fri 22:00-06:00 1000")]
    assert cap_at(night, datetime(2026, 11, 27, 23, 0), 0) == 1000  # Friday night
    assert cap_at(night, datetime(2026, 11, 28, 5, 0), 0) == 1000  # Saturday early
    assert cap_at(night, datetime(2026, 11, 26, 23, 0), 0) == 0  # Thursday night
    assert cap_at([parse("sun-tue 09:00-10:00 10")], datetime(2026, 11, 30, 9, 30), 0) == 10  # wraps the week


@pytest.mark.parametrize("text", ["weekdays 08:00-20:00 4000", "mon-fri 8-20 4000", "mon 25:00-26:00 1",
                                  "mon 10:00-10:00 5", "mon-fri 08:00-20:00"])
def test_bad_windows_are_named(text):
    with pytest.raises(PosswarmError, match="wan.schedule: "):
        parse(text)
