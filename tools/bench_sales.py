"""``posswarm-bench sales``: tills record sales under dropped/duplicated/reordered frames, SIGKILLs and a cache outage.

Real processes on loopback (a seeder, a cache and N devices, each ``posswarm node`` on its own
127.X.1.Y with mDNS), real SQLite files; afterwards every committed sale must be at central
exactly once. Prints ``{committed, at_cache, at_central, lost, duplicated, p50_ms, p99_ms, ...}``.
With ``--flood N``: one till's gossip port is held by N idle connections while its POS sells, and
the sale latencies with and without the flood are printed.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import httpx
import trio

from tools.bench_gossip_flood import run_flood
from tools.sales_rig import Rig, cache_sales, central_sales, outbox_sales, percentile


async def _sell(rig: Rig, name: str, rate: float, quota: list[int], committed: dict, rng: random.Random) -> None:
    """One till's POS: a sale every 1/rate s; counted as committed only when the API said 201."""
    async with httpx.AsyncClient(timeout=5.0) as client:
        while quota[0] > 0:
            url = rig.api_url(name)
            if url and rig.alive(name):
                qty, cents = rng.randint(1, 3), rng.randint(50, 5000)
                body = {"lines": [{"sku": f"SKU{rng.randint(1, 500):04d}", "qty": qty, "unit_cents": cents}]}
                try:
                    response = await client.post(f"{url}/sales", json=body)
                    if response.status_code == 201:
                        doc = response.json()
                        committed[(doc["device_id"], doc["incarnation"], doc["seq"])] = doc["total_cents"]
                        quota[0] -= 1
                except httpx.HTTPError:
                    pass  # killed mid-request: maybe committed, maybe not; the outbox is the truth
            await trio.sleep(1.0 / rate)


async def _chaos(rig: Rig, kill_every: float, outage: float, rng: random.Random, stats: dict) -> None:
    """One long cache outage near the start and, meanwhile and after, a SIGKILL about every ``kill_every`` s."""
    in_outage = trio.Event()

    async def cache_outage() -> None:
        await trio.sleep(1.0)
        await rig.kill("cache")
        stats["cache_kills"] += 1
        in_outage.set()
        await trio.sleep(outage)
        await rig.start("cache")
        stats["outages"] += 1

    async def kills() -> None:
        while True:
            await trio.sleep(kill_every * rng.uniform(0.6, 1.4))
            victim = rng.choice([name for name in ["cache", *rig.device_names] if rig.alive(name)])
            await rig.kill(victim)
            stats["cache_kills" if victim == "cache" else "device_kills"] += 1
            await trio.sleep(rng.uniform(0.2, 1.0))
            if victim != "cache" or not in_outage.is_set() or stats["outages"]:
                await rig.start(victim)

    async with trio.open_nursery() as nursery:
        if outage > 0:
            nursery.start_soon(cache_outage)
        if kill_every > 0:
            nursery.start_soon(kills)


async def run_scenario(root: Path, *, devices: int = 3, sales: int = 300, drop: float = 0.0, dup: float = 0.0,
                       reorder: float = 0.0, kill_every: float = 0.0, cache_outage: float = 0.0, rate: float = 20.0,
                       drain_timeout: float = 60.0, seed: int | None = None) -> dict:
    """Run the whole scenario; the result says what reached the cache and central, and how fast."""
    rng = random.Random(seed)
    faults = ",".join(f"{k}={v}" for k, v in (("drop", drop), ("dup", dup), ("reorder", reorder)) if v)
    rig = Rig(root, devices, faults=faults)
    stats = {"cache_kills": 0, "device_kills": 0, "outages": 0}
    committed: dict[tuple, int] = {}
    try:
        with trio.fail_after(120):
            await rig.start_all()
            await rig.wait_connected()
        started = time.monotonic()
        quota = [sales]
        async with trio.open_nursery() as selling:
            for name in rig.device_names:
                selling.start_soon(_sell, rig, name, rate, quota, committed, random.Random(rng.random()))
            async with trio.open_nursery() as chaos:
                chaos.start_soon(_chaos, rig, kill_every, cache_outage, rng, stats)
                with trio.fail_after(max(120.0, 10 * sales / (rate * devices))):
                    while quota[0] > 0:
                        await trio.sleep(0.1)
                chaos.cancel_scope.cancel()
        selling_s = time.monotonic() - started
        for name in ["cache", *rig.device_names]:  # the chaos may have left one down
            if not rig.alive(name):
                await rig.start(name)
        drained_at = time.monotonic()
        with trio.move_on_after(drain_timeout):
            while True:
                truth = outbox_sales(rig)
                if {row[:3] for row in central_sales(rig)} == set(truth):
                    break
                await trio.sleep(0.25)
        drain_s = time.monotonic() - drained_at
        truth = outbox_sales(rig)
        central = central_sales(rig)
        cache = cache_sales(rig)
        central_keys = [row[:3] for row in central]
        latencies = [row[4] for row in cache]
        return {
            "devices": devices, "sales": sales, "drop": drop, "dup": dup, "reorder": reorder,
            "kill_every_s": kill_every, "cache_outage_s": cache_outage,
            "committed": len(committed),
            "in_outboxes": len(truth),
            "at_cache": len(cache),
            "at_central": len(central),
            "lost": len((set(committed) | set(truth)) - set(central_keys)),
            "duplicated": len(central_keys) - len(set(central_keys)),
            "unknown_at_central": len(set(central_keys) - set(truth)),
            "committed_cents": sum(committed.values()),
            "outbox_cents": sum(truth.values()),
            "central_cents": sum(row[3] for row in central),
            "p50_ms": percentile(latencies, 50),
            "p99_ms": percentile(latencies, 99),
            "selling_s": round(selling_s, 1),
            "drain_s": round(drain_s, 1),
            **stats,
        }
    finally:
        with trio.CancelScope(shield=True):
            await rig.stop_all()


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="posswarm-bench sales", description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, default=3)
    p.add_argument("--sales", type=int, default=300, help="sales to commit across the store")
    p.add_argument("--rate", type=float, default=20.0, help="sales per second per till")
    p.add_argument("--drop", type=float, default=0.0, help="probability a gossip frame is dropped")
    p.add_argument("--dup", type=float, default=0.0, help="probability a gossip frame is sent twice")
    p.add_argument("--reorder", type=float, default=0.0, help="probability a gossip frame is held back")
    p.add_argument("--kill-every", type=float, default=0.0, help="SIGKILL a random node about every SEC (0 = never)")
    p.add_argument("--cache-outage", type=float, default=0.0, help="keep the cache down SEC while tills sell")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--flood", type=int, default=0, metavar="N",
                   help="instead: hold N idle connections on one till's gossip port while it sells --sales per phase")
    p.add_argument("--keep", type=Path, default=None, help="work in this (new) directory and keep logs and files")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="posswarm-bench-sales-") as tmp:
        root = args.keep or Path(tmp)
        if args.flood:
            result = trio.run(lambda: run_flood(root, connections=args.flood, sales=args.sales, rate=args.rate))
        else:
            result = trio.run(lambda: run_scenario(
                root, devices=args.devices, sales=args.sales, drop=args.drop, dup=args.dup, reorder=args.reorder,
                kill_every=args.kill_every, cache_outage=args.cache_outage, rate=args.rate, seed=args.seed))
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>20}: {value}")
    if args.flood:
        ok = result["failed"] == 0 and result["committed"] == result["at_cache"] == 2 * args.sales
    else:
        ok = result["lost"] == 0 and result["duplicated"] == 0 and result["outbox_cents"] == result["central_cents"]
    if not ok:
        print("posswarm-bench sales: FAILED: sales lost, failed, duplicated or money totals differ", file=sys.stderr)
    return 0 if ok else 1
