"""What retailers use instead, on the same emulated network: plain HTTP from central, or via a store cache."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import trio

from posswarm.errors import PosswarmError
from tools.netsim import netns
from tools.netsim.network import Network
from tools.netsim.topology import Node


async def _serve(net: Network, nursery: trio.Nursery, name: str, namespace: str, address: str, directory: Path) -> str:
    cmd = [sys.executable, "-m", "tools.netsim.static_server", str(directory), "--listen", f"{address}:0"]
    return await net.start(nursery, name, namespace, cmd, "seeder")  # the same 'listening url=' line


async def _download(node: Node, url: str, dest: Path, size: int) -> float:
    """curl inside the node's namespace; returns when it finished (wall clock)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    cmd = netns.exec_prefix(node.namespace) + ["curl", "-sS", "--fail", "-o", str(dest), url]
    result = await trio.run_process(cmd, capture_stderr=True, check=False)
    if result.returncode != 0 or dest.stat().st_size != size:
        raise PosswarmError(f"{node.node_id}: curl {url} failed: {result.stderr.decode(errors='replace').strip()}")
    return time.time()


async def _download_all(jobs: list[tuple[Node, str, Path]], size: int) -> dict[str, float]:
    done: dict[str, float] = {}

    async def one(node: Node, url: str, dest: Path) -> None:
        done[node.node_id] = await _download(node, url, dest, size)

    async with trio.open_nursery() as nursery:
        for job in jobs:
            nursery.start_soon(one, *job)
    return done


def _result(net: Network, before: dict, started: float, device_done: dict[str, float],
            cache_done: dict[str, float] | None = None) -> dict:
    after = net.wan_counters()
    stores = []
    for store in net.topo.stores:
        entry = {
            "store": store.store_id,
            "wan_bytes_in": (after[store.index] - before[store.index]).rx_payload,
            "devices": [{"id": d.node_id, "installed_s": round(device_done[d.node_id] - started, 2)}
                        for d in store.devices],
        }
        if cache_done is not None:
            entry["cache_installed_s"] = round(cache_done[store.cache.node_id] - started, 2)
        stores.append(entry)
    return {"stores": stores, "completion_s": round(max(device_done.values()) - started, 2)}


async def http_central(net: Network, nursery: trio.Nursery, image: Path, deadline_s: float) -> dict:
    """Every device downloads the image straight from central (a plain registry: WAN bytes = N x image)."""
    topo = net.topo
    url = await _serve(net, nursery, "http-central", topo.central, topo.central_ip, image.parent)
    work = net.workdir / "http-central"
    jobs = [(d, f"{url}/{image.name}", work / d.node_id / image.name) for s in topo.stores for d in s.devices]
    before, started = net.wan_counters(), time.time()
    with trio.fail_after(deadline_s):
        done = await _download_all(jobs, image.stat().st_size)
    result = _result(net, before, started, done)
    shutil.rmtree(work, ignore_errors=True)
    return result


async def http_cache(net: Network, nursery: trio.Nursery, image: Path, deadline_s: float) -> dict:
    """Each store's cache downloads once from central, then serves its devices (a caching proxy's design)."""
    topo = net.topo
    central = await _serve(net, nursery, "http-cache-central", topo.central, topo.central_ip, image.parent)
    work = net.workdir / "http-cache"
    size = image.stat().st_size
    local: dict[str, str] = {}
    for store in topo.stores:  # up before the clock starts, like a proxy that is always there
        cache_dir = work / store.cache.node_id
        cache_dir.mkdir(parents=True)
        local[store.store_id] = await _serve(net, nursery, f"http-cache-{store.cache.node_id}",
                                             store.cache.namespace, store.cache.address, cache_dir)
    before, started = net.wan_counters(), time.time()
    cache_done: dict[str, float] = {}
    device_done: dict[str, float] = {}

    async def store_rollout(store) -> None:
        cache_done[store.cache.node_id] = await _download(store.cache, f"{central}/{image.name}",
                                                          work / store.cache.node_id / image.name, size)
        url = f"{local[store.store_id]}/{image.name}"
        jobs = [(d, url, work / d.node_id / image.name) for d in store.devices]
        device_done.update(await _download_all(jobs, size))

    with trio.fail_after(deadline_s):
        async with trio.open_nursery() as stores:
            for store in topo.stores:
                stores.start_soon(store_rollout, store)
    result = _result(net, before, started, device_done, cache_done)
    shutil.rmtree(work, ignore_errors=True)
    return result
