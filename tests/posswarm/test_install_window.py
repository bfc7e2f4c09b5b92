"""Install windows: when a staged release may become what runs, from the rollout's activate and install.window."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from posswarm import install_window as iw
from posswarm.errors import PosswarmError

LONDON = ZoneInfo("Europe/London")
NIGHTLY = iw.windows_of(("daily 02:00-04:00",))


def first_allowed(activate: str, windows, start: datetime, *, on=lambda t: True) -> datetime:
    """The first minute from ``start`` at which the release activates, for a till powered on when ``on`` says."""
    t = start
    for _ in range(14 * 24 * 60):
        if on(t) and iw.why_not_now(activate, windows, t) is None:
            return t
        t += timedelta(minutes=1)
    raise AssertionError("never activates")


def test_staged_at_1400_activates_at_0200_store_time():
    staged = datetime(2026, 12, 1, 14, 0, tzinfo=LONDON)
    why = iw.why_not_now("window", NIGHTLY, staged)
    assert why == "waits for its install window (opens Wed 2026-12-02 02:00 store time)"
    assert first_allowed("window", NIGHTLY, staged) == datetime(2026, 12, 2, 2, 0, tzinfo=LONDON)
    assert iw.why_not_now("window", NIGHTLY, datetime(2026, 12, 2, 4, 0, tzinfo=LONDON)) is not None, "end is exclusive"


def test_a_till_off_during_its_window_activates_in_the_next():
    staged = datetime(2026, 12, 1, 14, 0, tzinfo=LONDON)
    off = (datetime(2026, 12, 1, 20, 0, tzinfo=LONDON), datetime(2026, 12, 2, 9, 0, tzinfo=LONDON))
    got = first_allowed("window", NIGHTLY, staged, on=lambda t: not off[0] <= t < off[1])
    assert got == datetime(2026, 12, 3, 2, 0, tzinfo=LONDON)


def test_now_ignores_the_window_and_no_window_means_any_time():
    at_lunch = datetime(2026, 12, 1, 12, 30, tzinfo=LONDON)
    assert iw.why_not_now("now", NIGHTLY, at_lunch) is None
    assert iw.why_not_now("window", [], at_lunch) is None


def test_at_a_utc_time_counts_in_utc_whatever_the_store_zone():
    tokyo = ZoneInfo("Asia/Tokyo")
    activate = "at 2026-12-02T02:00Z"
    assert "activates at 2026-12-02 02:00 UTC" in iw.why_not_now(activate, NIGHTLY, datetime(2026, 12, 2, 10, 59, tzinfo=tokyo))
    assert iw.why_not_now(activate, NIGHTLY, datetime(2026, 12, 2, 11, 0, tzinfo=tokyo)) is None


def test_weekend_nights_past_midnight_and_summer_time():
    windows = iw.windows_of(("sat,sun 23:30-01:00",))
    friday = datetime(2026, 3, 27, 9, 0, tzinfo=LONDON)  # the clocks go forward on Sunday 29 March
    assert first_allowed("window", windows, friday) == datetime(2026, 3, 28, 23, 30, tzinfo=LONDON)
    assert iw.why_not_now("window", windows, datetime(2026, 3, 29, 0, 30, tzinfo=LONDON)) is None  # Saturday's tail
    assert iw.seconds_to_change(windows, datetime(2026, 3, 28, 23, 0, tzinfo=LONDON)) == 1800


@pytest.mark.parametrize("text", ["tonight", "at tomorrow", "at 2026-12-02T02:00", "at 2026-12-02T02:00+01:00", ""])
def test_an_activate_value_that_is_no_time_is_refused_in_one_line(text):
    with pytest.raises(PosswarmError, match="use 'now', 'window' or 'at YYYY-MM-DDTHH:MMZ'"):
        iw.check_activate(text)


def test_an_install_window_has_no_rate_and_a_wan_window_needs_one():
    with pytest.raises(PosswarmError, match="install.window: 'daily 02:00-04:00 4000' is not a window"):
        iw.windows_of(("daily 02:00-04:00 4000",))
    from posswarm import wan_window

    with pytest.raises(PosswarmError, match="is not a window"):
        wan_window.parse("daily 02:00-04:00")
