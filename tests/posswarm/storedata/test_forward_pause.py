"""The cache's pacing after central answered: as long again as central took (spread), none after a full batch."""

import pytest

from posswarm.storedata.cache import FORWARD_BATCH, FORWARD_PACE_MAX_S, forward_pause


def test_a_busy_central_gets_the_next_batch_about_as_late_as_it_answered():
    assert forward_pause(0.8, 20, 0.5) == pytest.approx(0.8)
    assert forward_pause(0.8, 20, 0.0) == pytest.approx(0.4)
    assert forward_pause(0.8, 20, 0.999) == pytest.approx(1.199, abs=1e-3)


def test_a_quick_answer_costs_almost_no_wait():
    assert forward_pause(0.004, 3) < 0.01


def test_a_full_batch_is_followed_at_once_so_a_backlog_drains_at_centrals_pace():
    assert forward_pause(2.0, FORWARD_BATCH, 0.9) == 0.0


def test_the_pause_is_bounded_whatever_central_took():
    assert forward_pause(600.0, 1, 0.99) == FORWARD_PACE_MAX_S
    assert forward_pause(-1.0, 1) == 0.0  # a clock that stepped back never makes a negative sleep
