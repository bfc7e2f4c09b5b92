"""``posswarm-bench sku`` waits on progress, not on a fixed deadline: slow but moving passes, stuck fails by name."""

import pytest
import trio

from tools import bench_sku


async def test_a_slow_fill_that_keeps_moving_is_waited_for(monkeypatch):
    monkeypatch.setattr(bench_sku, "STALL_S", 0.3)
    held = iter(range(1, 100))
    count = [0]

    def progress() -> int:
        count[0] = next(held)
        return count[0]

    with trio.fail_after(10):  # ten stall windows in all: no fixed deadline would have let it finish
        await bench_sku._until_held("the cache to hold the whole catalog", progress, lambda: count[0] >= 30,
                                    lambda: "", poll_s=0.1)


async def test_a_stuck_fill_fails_naming_what_it_waited_for_and_how_far_it_got(monkeypatch):
    monkeypatch.setattr(bench_sku, "STALL_S", 0.3)
    with trio.fail_after(10), pytest.raises(bench_sku.BenchFailed) as failed:
        await bench_sku._until_held("the fresh device to hold the whole catalog", lambda: 41, lambda: False,
                                    lambda: "till-05 holds 41 of 100,000 SKUs", poll_s=0.05)
    assert "the fresh device to hold the whole catalog: nothing moved for 0 s; till-05 holds 41" in str(failed.value)


async def test_a_price_change_reaches_every_till_of_several_stores(tmp_path):
    from tools.sku_stores import run_stores

    result = await run_stores(tmp_path, stores=2, tills=2, skus=50, changes=2, seed=7)
    assert result["tills"] == 4 and result["price_changes"] == 2
    assert 0 < result["price_change_to_a_till_p50_s"] <= result["price_change_to_every_till_p99_s"]
    # What says whether the figures are of stores or of one saturated process: the cores this process used.
    assert result["bench_process_cores_during_changes"] > 0
    assert 0 < result["bench_event_loop_share_during_changes"] <= result["bench_process_cores_during_changes"] + 0.01
