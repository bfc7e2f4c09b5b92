"""netsim end to end: real namespaces, shaped links, real seeder/tracker/node processes; one store, three tills."""

import os
import subprocess

import pytest

from posswarm.errors import PosswarmError
from tools.netsim import netns
from tools.netsim.run import Scenario, run
from tools.netsim.topology import PREFIX


def _namespaces_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root (CI runs as root)"
    probe = f"{PREFIX}probe-{os.getpid()}"
    try:
        made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    except FileNotFoundError:
        return "iproute2 ('ip') is not installed"
    if made.returncode != 0:
        return f"cannot create a network namespace here: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


async def test_one_store_three_tills_all_install_and_the_image_crosses_the_wan_once(tmp_path):
    reason = _namespaces_unavailable()
    if reason:
        pytest.skip(reason)
    prefix = f"{PREFIX}t{os.getpid() % 10000}-"  # its own names: a netsim run elsewhere is not disturbed
    # 64 MiB of real image is ~10 MB of compressed chunks: large enough that the control plane (catalog, signed
    # state, manifest and torrent, announces) stays well inside the 2 % the accounting check allows
    scenario = Scenario(stores=1, devices=3, image_mb=64, wan_mbit=40, lan_mbit=400, deadline_s=120, prefix=prefix)
    try:
        result = await run(scenario, tmp_path)
    finally:
        left = netns.leftovers(prefix)
    assert left == [], "netsim left namespaces behind"

    (store,) = result["stores"]
    assert len(store["devices"]) == 3
    for device in store["devices"]:
        assert device["installed_s"] > 0
        assert device["bytes_from_lan"] >= result["stored_bytes"]  # the whole release, as its chunks travel
    assert 1.0 <= result["wan_amplification"] <= 1.05
    assert result["wan_accounting_agrees"], store
    assert result["payload"] == "real" and result["stored_bytes"] < result["image_bytes"]  # a real image compresses
    # the release has to go through the 40 Mbit WAN at least once: nothing can beat the ideal
    assert result["completion_s"] >= result["ideal_s"] * 0.95


async def test_cross_store_caches_seed_each_other_and_central_sends_less_than_a_copy_each(tmp_path):
    reason = _namespaces_unavailable()
    if reason:
        pytest.skip(reason)
    prefix = f"{PREFIX}t{os.getpid() % 10000}c-"
    scenario = Scenario(stores=2, devices=1, image_mb=16, wan_mbit=40, lan_mbit=400, cross_store=True,
                        deadline_s=180, prefix=prefix, payload="random")  # 16 MiB on the wire, like before
    try:
        result = await run(scenario, tmp_path)
    finally:
        left = netns.leftovers(prefix)
    assert left == [], "netsim left namespaces behind"

    image = result["stored_bytes"]  # the release as it travels: its compressed chunks
    for store in result["stores"]:
        assert store["wan_bytes_in"] >= image  # every store got the whole image over its WAN ...
        assert all(d["bytes_from_lan"] >= image for d in store["devices"])  # ... and its till only from the LAN
    into_stores = sum(s["wan_bytes_in"] for s in result["stores"])
    # ... but not all of it from central: central's own link carried clearly less than a copy per store,
    # and what the stores took beyond it came from each other's caches (routed between the stores)
    assert result["central_upload_bytes"] < 0.8 * 2 * image
    assert into_stores - result["central_upload_bytes"] >= image // 4
    assert result["wan_accounting_agrees"]


def test_refuses_to_start_over_leftovers_and_clean_removes_them():
    reason = _namespaces_unavailable()
    if reason:
        pytest.skip(reason)
    prefix = f"{PREFIX}t{os.getpid() % 10000}x-"
    subprocess.run(["ip", "netns", "add", f"{prefix}central"], check=True)
    try:
        with pytest.raises(PosswarmError, match="exist already.*posswarm-netsim clean"):
            netns.check_can_start(prefix)
    finally:
        removed = netns.clean(prefix)
    assert removed == [f"{prefix}central"]
    assert netns.leftovers(prefix) == []
    netns.check_can_start(prefix)
