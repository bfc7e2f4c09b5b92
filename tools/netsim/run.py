"""The netsim scenario: publish an image (and optionally an update) and measure how it reaches every store."""

from __future__ import annotations

import json
import time
from dataclasses import astuple, dataclass
from pathlib import Path

import trio

from posswarm import logs
from posswarm.release import wire_size
from tools import payloads
from tools.netsim.network import Network, emulated_network
from tools.netsim.proc_usage import UsageWindow, light_nodes
from tools.netsim.rates import Sample, steady_rate, timeline
from tools.netsim.topology import PREFIX, plan

log = logs.get("netsim")

RELEASE = "pos-image"
ACCOUNTING_TOLERANCE = 0.02  # posswarm's own WAN figures must agree with the routers' within 2 %
SAMPLE_EVERY_S = 0.1  # WAN counters while a release arrives: its timeline, and a capped download's steady rate
IDLE_S = 3.0  # every process's CPU with nothing to do, before publish: 0.01 s clock ticks resolve 0.33 % of a core


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
    payload: str = "real"  # tools/payloads.py: a real ext4 image, or "random" (the incompressible worst case)
    central_failover: bool = False  # tools/netsim/ha_central.py: two of each behind HAProxy, one of each killed


def _wan_cap(scenario: Scenario, stores: list[dict]) -> dict | None:
    """How closely each store's WAN kept to its window's cap while the download ran at full speed
    (10-90 % of its bytes, from the router's counters): the cap is on the wire, so wire bits count."""
    if not scenario.wan_cap_kbps:
        return None
    steady = [s["wan_steady"] for s in stores]
    if any(r is None for r in steady):
        return {"kbps": scenario.wan_cap_kbps, "error": "a download was too short to sample; use a larger --image-mb"}
    wire = [round(r["wire_kbps"]) for r in steady]
    return {
        "kbps": scenario.wan_cap_kbps,
        "wire_kbps": wire,
        "payload_kbps": [round(r["payload_kbps"]) for r in steady],
        "worst_off_percent": round(max(abs(w / scenario.wan_cap_kbps - 1) for w in wire) * 100, 1),
        "note": "router WAN rate between 10 % and 90 % of each store's bytes, sampled every "
                f"{SAMPLE_EVERY_S} s; wire = frames with their headers, payload = what they carried",
    }


async def _sample_wan(net: Network, samples: dict[int, list[Sample]], usage: UsageWindow) -> None:
    """Every SAMPLE_EVERY_S, each store router's WAN counters and every process's CPU and memory, until cancelled."""
    while True:
        counters = await trio.to_thread.run_sync(net.wan_counters)
        now = time.monotonic()
        for index, c in counters.items():
            samples[index].append(Sample(now, c.rx_bytes, c.rx_packets))
        usage.sample()
        await trio.sleep(SAMPLE_EVERY_S)


async def idle_usage(net: Network, seconds: float = IDLE_S) -> dict[str, dict]:
    """Every process's CPU and memory over ``seconds`` with no release moving."""
    usage = UsageWindow(net.pids)
    usage.start()
    deadline = trio.current_time() + seconds
    while trio.current_time() < deadline:
        await trio.sleep(SAMPLE_EVERY_S)
        usage.sample()
    return usage.report(seconds)


def _steady(samples: list[Sample], wanted_bytes: int) -> dict | None:
    rate = steady_rate(samples, wanted_bytes)
    if rate is None:
        return None
    return {"seconds": round(rate.seconds, 2), "wire_kbps": round(rate.wire_kbps),
            "payload_kbps": round(rate.payload_kbps)}


def _timeline(samples: list[Sample], published: float) -> dict | None:
    """The store's WAN download from publish: first and last byte, its rate between them, and every step's."""
    # samples carry time.monotonic(); publish returns time.time()
    found = timeline(samples, published - time.time() + time.monotonic())
    if found is None:
        return None
    return {"first_byte_s": found.first_byte_s, "last_byte_s": found.last_byte_s, "fetch_kbps": found.fetch_kbps,
            "step_s": found.step_s, "kbps": list(found.kbps)}


def ideal_s(image_bytes: int, wan_mbit: float, lan_mbit: float) -> float:
    """The image through the slower of the store's two links, at line rate, once."""
    return image_bytes * 8 / (min(wan_mbit, lan_mbit) * 1e6)


async def run(scenario: Scenario, workdir: Path) -> dict:
    """Build the network, run posswarm in it, return the result document of ``posswarm-netsim run --json``."""
    topo = plan(scenario.stores, scenario.devices, wan_mbit=scenario.wan_mbit, lan_mbit=scenario.lan_mbit,
                prefix=scenario.prefix)
    async with emulated_network(topo, workdir, cross_store=scenario.cross_store,
                                wan_cap_kbps=scenario.wan_cap_kbps) as net, trio.open_nursery() as nursery:
        if scenario.central_failover:
            from tools.netsim.ha_central import failover_rollout

            result = await failover_rollout(net, nursery, scenario)
        else:
            result = await rollout(net, nursery, scenario)
        nursery.cancel_scope.cancel()
    return result


async def rollout(net: Network, nursery: trio.Nursery, scenario: Scenario, *, started: bool = False) -> dict:
    """Start posswarm in ``net`` (processes live in ``nursery``; ``started``: already), distribute the image and the update."""
    if not started:
        await net.start_posswarm(nursery)
    image = payloads.first(net.workdir / "payload", scenario.image_mb, scenario.payload)
    size = image.stat().st_size
    idle = await idle_usage(net)
    first = await distribute(net, image, "1.0", scenario.deadline_s)
    # what crosses a WAN at best: the release's stored (compressed) chunk files, once
    stored = wire_size(net.releases / RELEASE / "1.0")
    last = max(d["installed_s"] for s in first["stores"] for d in s["devices"])
    ideal = ideal_s(stored, scenario.wan_mbit, scenario.lan_mbit)
    result = {
        "image_bytes": size,
        "stored_bytes": stored,
        "payload": scenario.payload,
        "wan_mbit": scenario.wan_mbit,
        "lan_mbit": scenario.lan_mbit,
        "stores": first["stores"],
        "wan_amplification": round(max(s["wan_bytes_in"] for s in first["stores"]) / stored, 4),
        "completion_s": round(last, 2),
        "ideal_s": round(ideal, 2),
        "completion_ratio": round(last / ideal, 3),
        "central_upload_bytes": first["central_upload_bytes"],
        "central_upload_per_image": round(first["central_upload_bytes"] / stored, 3),
        "cross_store": scenario.cross_store,
        "wan_cap": _wan_cap(scenario, first["stores"]),
        "publish_s": first["publish_s"],
        "wan_accounting_agrees": first["wan_accounting_agrees"],
        "processes": {"idle_s": IDLE_S, "idle": idle, "distribution_s": first["seconds"],
                      "distribution": first["processes"]},
        "light_nodes": light_nodes(net.topo, idle, first["processes"], size),
        "wan_bytes_note": "router WAN counters minus 66 B of Ethernet/IP/TCP headers per frame (GSO off)",
    }
    if scenario.update_percent:
        update, changed = payloads.update(net.workdir / "payload", image, scenario.image_mb, scenario.payload,
                                          percent=scenario.update_percent)
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
    samples: dict[int, list[Sample]] = {s.index: [] for s in net.topo.stores}
    usage = UsageWindow(net.pids)
    async with trio.open_nursery() as sampling:
        # from before publish: the seeder offers the release while publish is still finishing
        usage.start()
        sampling.start_soon(_sample_wan, net, samples, usage)
        started = time.time()
        published = await net.publish(payload, RELEASE, version)
        log.info("netsim.published", version=version, seconds=round(published - started, 2))
        with trio.fail_after(deadline_s):
            await net.wait_installed(RELEASE, version)
        sampling.cancel_scope.cancel()
    usage.sample()
    seconds = round(time.time() - started, 2)
    # kept with the work directory (--keep), to plot or check the rate over time
    (net.workdir / f"wan-samples-{version}.json").write_text(json.dumps(
        {net.topo.stores[i - 1].store_id: [astuple(x) for x in v] for i, v in samples.items()}))
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
            **({"wan_steady": _steady(samples[store.index], cache["wanted_bytes"])} if net.wan_cap_kbps else {}),
            "wan_timeline": _timeline(samples[store.index], published),
            "devices": [{"id": node_id, "installed_s": round(r["done_at"] - published, 2),
                         "bytes_from_lan": r["bytes_from_lan"]} for node_id, r in devices.items()],
        })
    return {
        "stores": stores,
        "central_upload_bytes": (central_after - central_before).tx_payload,
        "publish_s": round(published - started, 2),
        "wan_accounting_agrees": agrees,
        "seconds": seconds,  # publish started -> every node installed: the window of "processes"
        "processes": usage.report(seconds),
    }
