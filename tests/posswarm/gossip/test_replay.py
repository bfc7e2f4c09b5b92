"""Replay window: each counter once per sender, reordering tolerated inside the window."""

from hypothesis import given, settings
from hypothesis import strategies as st

from posswarm.gossip.replay import WINDOW, ReplayWindow


def test_in_order_then_duplicates_refused():
    window = ReplayWindow()
    assert [window.accept("a", n) for n in range(1, 6)] == [True] * 5
    assert [window.accept("a", n) for n in range(1, 6)] == [False] * 5


def test_reordered_inside_window_accepted_once():
    window = ReplayWindow()
    assert window.accept("a", 100)
    assert window.accept("a", 98)
    assert window.accept("a", 99)
    assert not window.accept("a", 98)
    assert window.accept("a", 100 - WINDOW + 1)
    assert not window.accept("a", 100 - WINDOW)  # older than the window: refused even if never seen


def test_big_jump_forgets_the_past_without_huge_shifts():
    window = ReplayWindow()
    assert window.accept("a", 5)
    assert window.accept("a", 2**63)
    assert not window.accept("a", 5)
    assert window.accept("a", 2**63 - 1)


def test_senders_are_independent_and_a_new_boot_id_starts_afresh():
    window = ReplayWindow()
    assert window.accept("till-1/boot1", 1)
    assert window.accept("till-2/boot1", 1)
    assert not window.accept("till-1/boot1", 1)
    assert window.accept("till-1/boot2", 1)


def test_least_recent_sender_is_forgotten_beyond_the_limit():
    window = ReplayWindow(max_senders=2)
    window.accept("a", 1)
    window.accept("b", 1)
    window.accept("c", 1)
    assert not window.accept("b", 1)
    assert window.accept("a", 1)  # forgotten, so accepted again (sales and SKU merges are idempotent)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("ab"), st.integers(0, 3000)), max_size=300), st.sampled_from([8, 64, 1024]))
def test_matches_a_reference_model(arrivals, size):
    window = ReplayWindow(window=size)
    seen: dict[str, set[int]] = {"a": set(), "b": set()}
    highest: dict[str, int] = {}
    for sender, counter in arrivals:
        expected = counter not in seen[sender] and counter > highest.get(sender, counter) - size
        assert window.accept(sender, counter) == expected
        if expected:
            seen[sender].add(counter)
            highest[sender] = max(highest.get(sender, counter), counter)
