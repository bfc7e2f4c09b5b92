"""The strongest proxy baseline: Debian's Varnish on each store's cache, streaming and coalescing, in front of central.

Varnish fetches the image from central once (every till's request but the first waits on that one
fetch: its waiting list) and streams it to every till while the fetch runs (``beresp.do_stream``).
Both are checked after the run from Varnish's own counters and log and from the routers' WAN
counters; a run where either did not happen fails with the reason, not a figure.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

import trio

from posswarm.errors import PosswarmError
from tools.netsim import netns
from tools.netsim.http_baseline import download_all, result, serve
from tools.netsim.network import Network
from tools.netsim.topology import Store
from tools.netsim.varnish_evidence import COUNTERS, counters, judge, transactions

PORT = 6081  # Varnish's usual port; each cache has a namespace of its own
ONE_FETCH = 1.02  # WAN payload in / compressed image: one fetch, with retransmissions' slack
STOP_S = 10.0
LOG_WAIT_S = 5.0

VCL = """vcl 4.1;

backend central {{
    .host = "{host}";
    .port = "{port}";
    .first_byte_timeout = 60s;
    .between_bytes_timeout = 60s;
}}

sub vcl_backend_response {{
    # hand each byte to every waiting till as it arrives, rather than after the whole image
    set beresp.do_stream = true;
    set beresp.ttl = 1h;
}}
"""


def check_installed() -> None:
    missing = [t for t in ("varnishd", "varnishstat", "varnishlog") if shutil.which(t) is None]
    if missing:
        raise PosswarmError(f"the varnish baseline needs {', '.join(missing)} (apt-get install varnish)")


def _run(argv: list[str]) -> bytes:
    done = subprocess.run(argv, capture_output=True, timeout=60)
    if done.returncode != 0:
        raise PosswarmError(f"{' '.join(argv[:3])}: {done.stderr.decode(errors='replace').strip()[-300:]}")
    return done.stdout


def vcl(host: str, port: int) -> str:
    """The benchmark's VCL: central as the one backend, streaming on; coalescing is Varnish's default."""
    return VCL.format(host=host, port=port)


def start(home: Path, listen: str, vcl_text: str, storage_bytes: int, *, prefix: Sequence[str] = ()) -> Path:
    """Start varnishd (under ``prefix``, e.g. ip netns exec) with its files in ``home``; its pid file, once it serves."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "default.vcl").write_text(vcl_text)
    pidfile = home / "varnishd.pid"
    # -j none: no privilege drop, so the benchmark's own (root-only) work directory is readable;
    # varnishd returns once its child serves, and runs until stop()
    _run([*prefix, "varnishd", "-j", "none", "-n", str(home / "n"), "-P", str(pidfile), "-a", listen,
          "-T", "127.0.0.1:0", "-f", str(home / "default.vcl"), "-s", f"malloc,{storage_bytes}"])
    return pidfile


async def stop(pidfile: Path) -> None:
    """SIGTERM the varnishd of ``pidfile`` (its manager stops its child), SIGKILL after STOP_S."""
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError):
        return
    with trio.move_on_after(STOP_S):
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            await trio.sleep(0.1)
    os.kill(pid, signal.SIGKILL)


@asynccontextmanager
async def running(net: Network, store: Store, central_url: str, storage_bytes: int):
    """varnishd in ``store``'s cache namespace, caching central's files; yields (its URL, its -n directory)."""
    home = net.workdir / "varnish" / store.cache.node_id
    url = urlsplit(central_url)
    pidfile = await trio.to_thread.run_sync(lambda: start(
        home, f"{store.cache.address}:{PORT}", vcl(url.hostname, url.port), storage_bytes,
        prefix=netns.exec_prefix(store.cache.namespace)))
    try:
        yield f"http://{store.cache.address}:{PORT}", home / "n"
    finally:
        with trio.CancelScope(shield=True):
            await stop(pidfile)


def evidence(varnish_dir: Path, path: str, tills: int) -> dict:
    """What this Varnish's counters and log say of the fetch of ``path`` (raises if it did not stream once)."""
    deadline = time.monotonic() + LOG_WAIT_S
    while True:  # a till can read its last byte just before Varnish logs the end of its request
        log = transactions(_run(["varnishlog", "-n", str(varnish_dir), "-d", "-g", "raw",
                                 "-i", "Timestamp,ReqURL,BereqURL,VCL_call"]))
        served = sum(1 for t in log.values() if t.kind == "c" and t.url == path and "Resp" in t.stamps)
        if served >= tills or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    stats = counters(_run(["varnishstat", "-n", str(varnish_dir), "-j"] + [f"-f{c}" for c in COUNTERS]))
    found = judge(stats, log, path)
    if found["tills_served"] != tills:
        raise PosswarmError(f"varnish: its log shows {found['tills_served']} tills served where {tills} were")
    return found


async def varnish_cache(net: Network, nursery: trio.Nursery, image: Path, packed: Path, deadline_s: float) -> dict:
    """Every store's tills fetch the compressed image from Varnish on their cache; it fetches it once from central."""
    topo = net.topo
    central = await serve(net, nursery, "varnish-central", topo.central, topo.central_ip, packed.parent)
    work = net.workdir / "varnish-tills"
    size = packed.stat().st_size
    async with _all_running(net, central, size * 2 + (64 << 20)) as local:
        before, started = net.wan_counters(), time.time()
        jobs = [(d, f"{local[s.store_id][0]}/{packed.name}", work / d.node_id / image.name)
                for s in topo.stores for d in s.devices]
        with trio.fail_after(deadline_s):
            done = await download_all(jobs, image.stat().st_size)
        found = result(net, before, started, done)
        for entry in found["stores"]:
            store = next(s for s in topo.stores if s.store_id == entry["store"])
            seen = await trio.to_thread.run_sync(evidence, local[store.store_id][1], f"/{packed.name}",
                                                 len(store.devices))
            amplification = entry["wan_bytes_in"] / size
            if amplification > ONE_FETCH:
                raise PosswarmError(f"varnish in store {entry['store']}: {amplification:.3f} x the image crossed "
                                    f"the WAN where its one fetch should carry {ONE_FETCH} x at most")
            entry["cache_installed_s"] = round(seen.pop("fetch_end") - started, 2)  # Varnish held it all
            seen.pop("fetch_start")
            entry["varnish"] = seen
    shutil.rmtree(work, ignore_errors=True)
    return found


@asynccontextmanager
async def _all_running(net: Network, central_url: str, storage_bytes: int):
    """One Varnish per store; yields store id -> (URL, -n directory)."""
    async with AsyncExitStack() as stack:
        yield {s.store_id: await stack.enter_async_context(running(net, s, central_url, storage_bytes))
               for s in net.topo.stores}
