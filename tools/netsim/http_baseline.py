"""What retailers use instead, on the same emulated network: plain HTTP from central, or via a store cache.

Central publishes the image as a retailer would, zstd-compressed (``zstd -3``, the same level as posswarm's
chunks); a till downloads it and decompresses it to disk as it arrives, then fsyncs it, so its time
includes the work posswarm's install does too (zstd's frame checksum is the verification).
"""

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


async def serve(net: Network, nursery: trio.Nursery, name: str, namespace: str, address: str, directory: Path) -> str:
    """A static file server of ``directory`` in ``namespace``, until ``nursery`` ends; its URL."""
    cmd = [sys.executable, "-m", "tools.netsim.static_server", str(directory), "--listen", f"{address}:0"]
    return await net.start(nursery, name, namespace, cmd, "seeder")  # the same 'listening url=' line


ZSTD_LEVEL = 3
# A till's fetch: curl into zstd, which writes the image as it decodes; then the file's own fsync.
_FETCH_AND_UNPACK = 'curl -sS --fail "$1" | zstd -q -d -f -o "$2" && sync "$2"'


async def compress(image: Path) -> Path:
    """``image``.zst next to it, as central would publish it (not timed: that is done before any store asks)."""
    packed = image.with_name(image.name + ".zst")
    result = await trio.run_process(["zstd", f"-{ZSTD_LEVEL}", "-q", "-f", "-o", str(packed), str(image)],
                                    capture_stderr=True, check=False)
    if result.returncode != 0:
        raise PosswarmError(f"zstd -{ZSTD_LEVEL} {image}: {result.stderr.decode(errors='replace').strip()} "
                            "(apt-get install zstd)")
    return packed


async def download(node: Node, url: str, dest: Path, size: int, *, unpack: bool) -> float:
    """curl inside the node's namespace (a till: decompressing to ``dest``); returns when it finished (wall clock)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if unpack:
        fetch = ["bash", "-o", "pipefail", "-c", _FETCH_AND_UNPACK, "fetch", url, str(dest)]
    else:
        fetch = ["curl", "-sS", "--fail", "-o", str(dest), url]
    result = await trio.run_process(netns.exec_prefix(node.namespace) + fetch, capture_stderr=True, check=False)
    got = dest.stat().st_size if dest.exists() else 0
    if result.returncode != 0 or got != size:
        said = result.stderr.decode(errors="replace").strip()[-300:] or f"{got} bytes where {size} were due"
        raise PosswarmError(f"{node.node_id}: fetching {url} failed: {said}")
    return time.time()


async def download_all(jobs: list[tuple[Node, str, Path]], size: int) -> dict[str, float]:
    """Every till at once, each decompressing its image to disk; node id -> when it was done."""
    done: dict[str, float] = {}

    async def one(node: Node, url: str, dest: Path) -> None:
        done[node.node_id] = await download(node, url, dest, size, unpack=True)

    async with trio.open_nursery() as nursery:
        for job in jobs:
            nursery.start_soon(one, *job)
    return done


def result(net: Network, before: dict, started: float, device_done: dict[str, float],
           cache_done: dict[str, float] | None = None) -> dict:
    """Per store: WAN payload bytes in (routers' counters since ``before``) and when each node was done."""
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


async def http_central(net: Network, nursery: trio.Nursery, image: Path, packed: Path, deadline_s: float) -> dict:
    """Every device downloads the compressed image straight from central (a plain registry: WAN bytes = N x it)."""
    topo = net.topo
    url = await serve(net, nursery, "http-central", topo.central, topo.central_ip, packed.parent)
    work = net.workdir / "http-central"
    jobs = [(d, f"{url}/{packed.name}", work / d.node_id / image.name) for s in topo.stores for d in s.devices]
    before, started = net.wan_counters(), time.time()
    with trio.fail_after(deadline_s):
        done = await download_all(jobs, image.stat().st_size)
    found = result(net, before, started, done)
    shutil.rmtree(work, ignore_errors=True)
    return found


async def http_cache(net: Network, nursery: trio.Nursery, image: Path, packed: Path, deadline_s: float) -> dict:
    """Each store's cache downloads the compressed image once, then serves its devices (store and forward)."""
    topo = net.topo
    central = await serve(net, nursery, "http-cache-central", topo.central, topo.central_ip, packed.parent)
    work = net.workdir / "http-cache"
    local: dict[str, str] = {}
    for store in topo.stores:  # up before the clock starts, like a proxy that is always there
        cache_dir = work / store.cache.node_id
        cache_dir.mkdir(parents=True)
        local[store.store_id] = await serve(net, nursery, f"http-cache-{store.cache.node_id}",
                                            store.cache.namespace, store.cache.address, cache_dir)
    before, started = net.wan_counters(), time.time()
    cache_done: dict[str, float] = {}
    device_done: dict[str, float] = {}

    async def store_rollout(store) -> None:
        cache_done[store.cache.node_id] = await download(store.cache, f"{central}/{packed.name}",
                                                         work / store.cache.node_id / packed.name,
                                                         packed.stat().st_size, unpack=False)
        url = f"{local[store.store_id]}/{packed.name}"
        jobs = [(d, url, work / d.node_id / image.name) for d in store.devices]
        device_done.update(await download_all(jobs, image.stat().st_size))

    with trio.fail_after(deadline_s):
        async with trio.open_nursery() as stores:
            for store in topo.stores:
                stores.start_soon(store_rollout, store)
    found = result(net, before, started, device_done, cache_done)
    shutil.rmtree(work, ignore_errors=True)
    return found
