"""A till's gossip port flooded with idle connections while its POS keeps selling: the sales API must stay up."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import httpx
import trio

from tools.sales_rig import GOSSIP_PORT, Rig, cache_sales, outbox_sales, percentile


def _ms(values: list[float], p: float) -> float | None:
    found = percentile(values, p)
    return None if found is None else round(found, 1)


async def _sell_timed(url: str, count: int, rate: float) -> tuple[list[float], dict[int, int], int]:
    """``count`` sales one after another; (latencies in ms of the answered ones, status counts, failures)."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    failed = 0
    async with httpx.AsyncClient(timeout=5.0) as client:
        for i in range(count):
            body = {"lines": [{"sku": f"SKU{i % 500:04d}", "qty": 1, "unit_cents": 100 + i}]}
            started = time.monotonic()
            try:
                response = await client.post(f"{url}/sales", json=body)
            except httpx.HTTPError:
                failed += 1
            else:
                latencies.append((time.monotonic() - started) * 1000)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            await trio.sleep(1.0 / rate)
    return latencies, statuses, failed


async def _flood(host: str, port: int, sources: list[str], slots: int, seconds: float) -> None:
    """``slots`` connections to ``host:port`` that say nothing and are reopened (after 1 s) whenever closed.

    Runs in a process of its own (:func:`flood_main`), so its work does not slow the POS client we time.
    Prints ``flooding`` once every slot has connected at least once.
    """
    opened = [0]

    async def slot(source: str) -> None:
        while True:
            try:
                stream = await trio.open_tcp_stream(host, port, local_address=source)
            except OSError:
                pass  # refused or out of ports: try again like an attacker would
            else:
                opened[0] += 1
                if opened[0] == slots:
                    print("flooding", flush=True)
                try:
                    while await stream.receive_some(1):
                        pass
                except (trio.BrokenResourceError, OSError):
                    pass
                finally:
                    await stream.aclose()
            await trio.sleep(1.0)

    with trio.move_on_after(seconds):
        async with trio.open_nursery() as nursery:
            for i in range(slots):
                nursery.start_soon(slot, sources[i % len(sources)])


def flood_main(argv: list[str]) -> None:
    """``HOST PORT SLOTS SECONDS SOURCE...``: run :func:`_flood` in this process."""
    host, port, slots, seconds, *sources = argv
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, int(slots) + 256), hard))
    trio.run(_flood, host, int(port), sources, int(slots), float(seconds))


async def run_flood(root: Path, *, connections: int = 1100, sources: int = 150, sales: int = 150, rate: float = 20.0,
                    fd_limit: int = 1024) -> dict:
    """A till's gossip port is flooded with ``connections`` idle connections while its POS keeps selling.

    The node runs with ``fd_limit`` descriptors; the flood comes from ``sources`` loopback addresses.
    The result gives the sale latencies without and with the flood and where every sale went.
    """
    rig = Rig(root, 1, fd_limit=fd_limit)
    till = rig.device_names[0]
    try:
        with trio.fail_after(120):
            await rig.start_all()
            await rig.wait_connected()
        url = rig.api_url(till)
        calm, calm_status, calm_failed = await _sell_timed(url, sales, rate)
        stats = {"till_max_held": 0}
        addresses = [f"127.{rig.net}.9.{i + 1}" for i in range(sources)]
        flood_s = 15.0 + 2 * sales / rate  # outlasts the selling below; the flooder is stopped then anyway
        flooder = await trio.lowlevel.open_process(
            [sys.executable, "-c", "import sys, tools.bench_gossip_flood as b; b.flood_main(sys.argv[1:])",
             rig.address(till), str(GOSSIP_PORT), str(connections), str(flood_s), *addresses],
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, cwd=Path(__file__).resolve().parent.parent)

        def till_gossip() -> dict:
            try:
                return json.loads((rig.data_dir(till) / "status.json").read_text())["storedata"]["gossip"]
            except (OSError, ValueError, KeyError, TypeError):
                return {}

        async def watch_till() -> None:  # the till's own count of the gossip connections it holds
            while True:
                stats["till_max_held"] = max(stats["till_max_held"], till_gossip().get("connections", 0))
                await trio.sleep(0.5)

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch_till)
                with trio.fail_after(30):  # the flood is on once every one of its connections was opened
                    said = b""
                    while b"flooding" not in said:
                        said += await flooder.stdout.receive_some(64) or b"flooding: exited"
                flooded, flood_status, flood_failed = await _sell_timed(url, sales, rate)
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                flooder.terminate()
                await flooder.wait()
        committed = calm_status.get(201, 0) + flood_status.get(201, 0)
        with trio.move_on_after(30):
            while len(cache_sales(rig)) < committed:
                await trio.sleep(0.25)
        doc = json.loads((rig.data_dir(till) / "status.json").read_text())["storedata"]["gossip"]
        return {
            "connections": connections, "sources": sources, "fd_limit": fd_limit, "sales_per_phase": sales,
            "calm_p50_ms": _ms(calm, 50), "calm_p99_ms": _ms(calm, 99),
            "flood_p50_ms": _ms(flooded, 50), "flood_p99_ms": _ms(flooded, 99),
            "flood_max_ms": round(max(flooded), 1) if flooded else None,
            "calm_status": calm_status, "flood_status": flood_status, "failed": calm_failed + flood_failed,
            "committed": committed, "in_outbox": len(outbox_sales(rig)), "at_cache": len(cache_sales(rig)),
            "till_max_held": stats["till_max_held"],
            "till_gossip_refused": doc.get("refused"), "till_alive": rig.alive(till),
        }
    finally:
        with trio.CancelScope(shield=True):
            await rig.stop_all()
