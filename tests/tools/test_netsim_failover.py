"""posswarm-netsim --central-failover: how long the caches' bytes stood still after a tracker and a seeder died."""

from tools.netsim.ha_central import stalled_s


def test_the_stall_is_the_longest_run_without_growth_after_the_kill():
    samples = [(0.0, 0), (1.0, 10), (2.0, 20), (2.5, 20), (3.0, 20), (4.2, 30), (4.5, 40), (6.5, 40), (7.0, 50)]
    # Killed at 2.0: nothing new until 4.2, then 4.5 -> 7.0 without growth is longer.
    assert stalled_s(samples, 2.0) == 2.5
    assert stalled_s(samples, None) is None


def test_no_growth_before_the_kill_is_not_counted():
    samples = [(0.0, 0), (5.0, 0), (6.0, 10), (6.5, 20)]
    assert stalled_s(samples, 5.5) == 0.5
