"""The control-plane benchmark at toy scale: real seeder and tracker, simulated caches, figures from /proc."""

from __future__ import annotations

import argparse

from tools.bench_control_plane import run


async def test_simulated_caches_poll_and_announce_and_central_is_measured():
    args = argparse.Namespace(stores=20, releases=1, poll_s=1.0, announce_s=2.0, seconds=3.0, connections=20)
    result = await run(args)
    assert result["errors"] == {}
    assert result["catalog_per_s"] > 5 and result["announces_per_s"] > 3
    assert result["tracker_store_releases"] >= 20
    assert set(result["central"]) == {"tracker", "seeder"}
    assert all(c["rss_mb"] > 10 for c in result["central"].values())
