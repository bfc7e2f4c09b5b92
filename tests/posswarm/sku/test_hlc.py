"""HLC: monotonic whatever the wall clock does, follows remote stamps, refuses ones far ahead."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from posswarm.sku.hlc import COUNTER_MASK, MAX_SKEW_MS, Clock, ClockSkew, pack, unpack

T = 1_700_000_000_000


def test_pack_layout_is_48_bit_ms_and_16_bit_counter():
    assert pack(T, 7) == T << 16 | 7
    assert unpack(pack(T, 7)) == (T, 7)


def test_same_ms_bumps_the_counter_and_a_later_ms_resets_it():
    clock = Clock()
    assert clock.now(T) == pack(T, 0)
    assert clock.now(T) == pack(T, 1)
    assert clock.now(T - 5000) == pack(T, 2)  # wall clock stepped back: HLC does not
    assert clock.now(T + 1) == pack(T + 1, 0)


def test_counter_overflow_carries_into_the_ms():
    clock = Clock(last=pack(T, COUNTER_MASK))
    assert clock.now(T) == pack(T + 1, 0)


def test_observe_jumps_past_a_remote_stamp():
    clock = Clock()
    clock.now(T)
    assert clock.observe(pack(T + 10, 4), T) == pack(T + 10, 5)
    assert clock.now(T) == pack(T + 10, 6)


def test_remote_stamp_too_far_ahead_is_refused_and_changes_nothing():
    clock = Clock()
    before = clock.now(T)
    clock.observe(pack(T + MAX_SKEW_MS), T)  # at the limit: fine
    with pytest.raises(ClockSkew, match="NTP"):
        clock.observe(pack(T + MAX_SKEW_MS + 1, 0), T - 1)
    assert clock.last == pack(T + MAX_SKEW_MS, 1)
    assert before < clock.last
    with pytest.raises(ClockSkew):
        clock.observe(-1, T)


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 2000), st.integers(0, 2000)), max_size=200))
def test_always_strictly_increasing_and_never_behind_wall_or_remote(events):
    clock = Clock()
    previous = -1
    for is_receive, wall, remote_ms in events:
        if is_receive:
            remote = pack(min(remote_ms, wall + MAX_SKEW_MS), 3)
            stamp = clock.observe(remote, wall)
            assert stamp > remote
        else:
            stamp = clock.now(wall)
        assert stamp > previous
        assert unpack(stamp)[0] >= wall
        previous = stamp
