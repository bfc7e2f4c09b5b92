"""The netsim scenario: publish an image (and optionally an update) and measure how it reaches every store."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import trio

from posswarm import logs
from posswarm.lab import change_image, write_image
from tools.netsim.network import Network, emulated_network
from tools.netsim.topology import PREFIX, plan

log = logs.get("netsim")

RELEASE = "pos-image"
ACCOUNTING_TOLERANCE = 0.02  # posswarm's own WAN figures must agree with the routers' within 2 %


@dataclass(frozen=True)
class Scenario:
    stores: int = 1
    devices: int = 3
    image_mb: int = 64
    wan_mbit: float = 40.0
    lan_mbit: float = 400.0
    update_percent: float | None = None
    cross_store: bool = False
    wan_cap_kbps: int = 0
    deadline_s: float = 600.0
    prefix: str = PREFIX


def _wan_cap(scenario: Scenario, stores: list[dict]) -> dict | None:
    """How closely each cache kept to its WAN window's cap: payload bytes over its download time."""
    if not scenario.wan_cap_kbps:
        return None
    achieved = [round(s["posswarm_wan_bytes"] * 8 / 1000 / (s["cache_installed_s"] - s["cache_learned_s"]))
                for s in stores]
    return {"kbps": scenario.wan_cap_kbps, "achieved_kbps": achieved,
            "worst_off_percent": round(max(abs(a / scenario.wan_cap_kbps - 1) for a in achieved) * 100, 1)}


def ideal_s(image_bytes: int, wan_mbit: float, lan_mbit: float) -> float:
    """The image through the slower of the store's two links, at line rate, once."""
    return image_bytes * 8 / (min(wan_mbit, lan_mbit) * 1e6)


async def run(scenario: Scenario, workdir: Path) -> dict:
    """Build the network, run posswarm in it, return the result document of ``posswarm-netsim run --json``."""
    topo = plan(scenario.stores, scenario.devices, wan_mbit=scenario.wan_mbit, lan_mbit=scenario.lan_mbit,
                prefix=scenario.prefix)
    async with emulated_network(topo, workdir, cross_store=scenario.cross_store,
                                wan_cap_kbps=scenario.wan_cap_kbps) as net, trio.open_nursery() as nursery:
        result = await rollout(net, nursery, scenario)
        nursery.cancel_scope.cancel()
    return result


async def rollout(net: Network, nursery: trio.Nursery, scenario: Scenario) -> dict:
    """Start posswarm in ``net`` (processes live in ``nursery``), distribute the image and the update."""
    await net.start_posswarm(nursery)
    (net.workdir / "v1").mkdir()
    image = write_image(net.workdir / "v1" / "image.bin", scenario.image_mb, seed=1)
    size = image.stat().st_size
    first = await distribute(net, image, "1.0", scenario.deadline_s)
    last = max(d["installed_s"] for s in first["stores"] for d in s["devices"])
    ideal = ideal_s(size, scenario.wan_mbit, scenario.lan_mbit)
    result = {
        "image_bytes": size,
        "wan_mbit": scenario.wan_mbit,
        "lan_mbit": scenario.lan_mbit,
        "stores": first["stores"],
        "wan_amplification": round(max(s["wan_bytes_in"] for s in first["stores"]) / size, 4),
        "completion_s": round(last, 2),
        "ideal_s": round(ideal, 2),
        "completion_ratio": round(last / ideal, 3),
        "central_upload_bytes": first["central_upload_bytes"],
        "central_upload_per_image": round(first["central_upload_bytes"] / size, 3),
        "cross_store": scenario.cross_store,
        "wan_cap": _wan_cap(scenario, first["stores"]),
        "publish_s": first["publish_s"],
        "wan_accounting_agrees": first["wan_accounting_agrees"],
        "wan_bytes_note": "router WAN counters minus 66 B of Ethernet/IP/TCP headers per frame (GSO off)",
    }
    if scenario.update_percent:
        (net.workdir / "v2").mkdir()
        update = net.workdir / "v2" / "image.bin"
        changed = change_image(image, update, percent=scenario.update_percent)
        second = await distribute(net, update, "1.1", scenario.deadline_s)
        wan = max(s["wan_bytes_in"] for s in second["stores"])
        result["update"] = {
            "percent": scenario.update_percent,
            "changed_bytes": changed,
            "wan_bytes_in": wan,
            "wan_per_changed_byte": round(wan / changed, 3),
            "completion_s": round(max(d["installed_s"] for s in second["stores"] for d in s["devices"]), 2),
            "stores": second["stores"],
        }
    return result


async def distribute(net: Network, payload: Path, version: str, deadline_s: float) -> dict:
    """Publish ``payload`` as ``version``; wait for every node; per-store WAN bytes from the routers' counters."""
    wan_before, central_before = net.wan_counters(), net.central_counters()
    started = time.time()
    published = await net.publish(payload, RELEASE, version)
    log.info("netsim.published", version=version, seconds=round(published - started, 2))
    with trio.fail_after(deadline_s):
        await net.wait_installed(RELEASE, version)
    await trio.sleep(1.0)  # one more status rewrite, so posswarm's byte counts are final
    wan_after, central_after = net.wan_counters(), net.central_counters()
    stores, agrees = [], True
    for store in net.topo.stores:
        counted = wan_after[store.index] - wan_before[store.index]
        cache = net.release_of(store.cache, RELEASE, version)
        devices = {d.node_id: net.release_of(d, RELEASE, version) for d in store.devices}
        # devices must take nothing from outside the store; if one did, it counts against the store too
        own = cache["bytes_from_wan"] + sum(r["bytes_from_wan"] for r in devices.values())
        off = abs(own - counted.rx_payload) / counted.rx_payload if counted.rx_payload else 0.0
        agrees = agrees and off <= ACCOUNTING_TOLERANCE
        stores.append({
            "store": store.store_id,
            "wan_bytes_in": counted.rx_payload,
            "wan_wire_bytes_in": counted.rx_bytes,
            "posswarm_wan_bytes": own,
            "accounting_off_percent": round(100 * off, 2),
            "cache_learned_s": round(cache["learned_at"] - published, 2),  # seeder scan + cache poll
            "cache_installed_s": round(cache["done_at"] - published, 2),
            "devices": [{"id": node_id, "installed_s": round(r["done_at"] - published, 2),
                         "bytes_from_lan": r["bytes_from_lan"]} for node_id, r in devices.items()],
        })
    return {
        "stores": stores,
        "central_upload_bytes": (central_after - central_before).tx_payload,
        "publish_s": round(published - started, 2),
        "wan_accounting_agrees": agrees,
    }
