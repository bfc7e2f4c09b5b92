"""``posswarm-bench sku`` waits on progress, not on a fixed deadline: slow but moving passes, stuck fails by name."""

from pathlib import Path

import pytest
import trio

from posswarm.errors import PosswarmError
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

    result = await run_stores(tmp_path, stores=3, tills=2, skus=50, changes=2, seed=7, processes=2)
    assert result["tills"] == 6 and result["price_changes"] == 2 and result["store_processes"] == 2
    assert 0 < result["price_change_to_a_till_p50_s"] <= result["price_change_to_every_till_p99_s"]
    # What says whether the figures are of stores or of saturated processes: the cores the store processes used,
    # and how busy the busiest one's event loop was.
    assert result["store_processes_cores_during_changes"] > 0
    assert 0 < result["busiest_store_loop_share_during_changes"] <= result["store_processes_cores_during_changes"] + 0.01
    # The store processes were stopped with the run: none is left behind.
    assert not [p for p in Path("/proc").glob("[0-9]*/cmdline") if str(tmp_path).encode() in _read(p)]


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


async def test_a_store_process_that_dies_fails_the_run_naming_its_log(tmp_path, monkeypatch):
    from tools import sku_stores

    real = sku_stores.slices

    def broken(rig, stores, tills, processes):  # a slice no store process can start: its keys are not there
        return [sku_stores.StoreSlice(**{**vars(plan), "keys": str(tmp_path / "no-keys")})
                for plan in real(rig, stores, tills, processes)]

    monkeypatch.setattr(sku_stores, "slices", broken)
    with trio.fail_after(120), pytest.raises(PosswarmError) as failed:
        await sku_stores.run_stores(tmp_path, stores=1, tills=1, skus=10, changes=1, seed=7, processes=1)
    assert "exited before its stores were up" in str(failed.value) and "stores-0.log" in str(failed.value)
