"""posswarm-netsim --central-failover: what losing a tracker and a seeder costs a rollout, its sales and its dashboard."""

import os
import shutil

import pytest

from tests.tools.test_netsim_rollout import _namespaces_unavailable
from tools.netsim import netns
from tools.netsim.ha_central import dashboard_gap_s, stalled_s
from tools.netsim.run import Scenario, run
from tools.netsim.topology import PREFIX
from tools.pg_server import server_bin


def test_the_stall_is_the_longest_run_without_growth_after_the_kill():
    samples = [(0.0, 0), (1.0, 10), (2.0, 20), (2.5, 20), (3.0, 20), (4.2, 30), (4.5, 40), (6.5, 40), (7.0, 50)]
    # Killed at 2.0: nothing new until 4.2, then 4.5 -> 7.0 without growth is longer.
    assert stalled_s(samples, 2.0) == 2.5
    assert stalled_s(samples, None) is None


def test_no_growth_before_the_kill_is_not_counted():
    samples = [(0.0, 0), (5.0, 0), (6.0, 10), (6.5, 20)]
    assert stalled_s(samples, 5.5) == 0.5


def test_the_dashboard_gap_is_the_longest_time_between_two_answers():
    polls = [(0.0, "ConnectError"), (0.5, "200"), (1.0, "200"), (1.5, "503"), (2.0, "ReadTimeout"), (2.6, "200"),
             (3.1, "200"), (3.6, "503")]
    assert dashboard_gap_s(polls) == 1.6  # 1.0 -> 2.6; before the first 200 is start-up, not a gap
    assert dashboard_gap_s([(0.0, "200"), (0.5, "200"), (2.5, "ConnectError")]) == 2.0  # the run ends in a gap
    assert dashboard_gap_s([(0.0, "503")]) is None


async def test_killing_a_tracker_and_a_seeder_mid_rollout_every_store_completes_no_sale_is_lost(tmp_path):
    reason = _namespaces_unavailable()
    if reason:
        pytest.skip(reason)
    for tool in ("haproxy", "redis-server"):
        if shutil.which(tool) is None:
            pytest.skip(f"Debian's {tool} is not installed (CI installs it)")
    if server_bin() is None:
        pytest.skip("PostgreSQL server binaries are not installed (CI installs them)")
    prefix = f"{PREFIX}t{os.getpid() % 10000}f-"
    # 16 MiB of random bytes over a 20 Mbit WAN: ~7 s a store, long enough to be killed half-way and to sell across it
    scenario = Scenario(stores=2, devices=1, image_mb=16, wan_mbit=20, lan_mbit=400, deadline_s=180, prefix=prefix,
                        payload="random", central_failover=True)
    try:
        result = await run(scenario, tmp_path)
    finally:
        left = netns.leftovers(prefix)
    assert left == [], "netsim left namespaces behind"

    assert all(d["installed_s"] > 0 for s in result["stores"] for d in s["devices"])
    failover = result["central_failover"]
    assert 45 <= failover["killed_at_percent"] <= 75, failover
    sales = result["sales"]
    assert sales["exactly_once"] and sales["lost"] == sales["duplicated"] == sales["phantom"] == 0, sales
    # every till sold before and after the kill, and every sale it was answered for reached central's PostgreSQL
    assert sales["acknowledged"] == sales["attempted"] and sales["rung_after_kill"] >= 2, sales
    assert sales["to_central_p99_ms"] is not None
    # a price changed after the kill reached every store's cache: the survivor took the signer's turn and served it
    prices = result["sku"]
    print(f"netsim central failover, price changed after the kill: {prices}")
    assert prices["caches_holding"] == prices["caches"] == 2 and prices["every_cache_s"] is not None, prices
    dashboard = result["dashboard"]
    # At worst HAProxy's checks (every 1 s, down after 2 failures) and one poll's 2 s timeout; a connect the dead
    # tracker refused is redispatched at once
    assert dashboard["after_kill_200"] > 0 and dashboard["longest_gap_s"] < 4.0, dashboard
