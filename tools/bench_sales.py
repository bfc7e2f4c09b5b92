"""``posswarm-bench sales``: tills' POSes sell through faults on the wire, SIGKILLs and outages; judged by the POS's ledger.

Real processes on loopback (a seeder, a cache and N devices, each ``posswarm node`` on its own
127.X.1.Y), real SQLite files. Each till's simulated POS (tools/pos_till.py) retries every
transaction under its id until answered and keeps its own ledger; afterwards central's export is
held against that ledger (tools/sales_verdict.py). Prints ``{attempted, lost, duplicated, phantom,
attempts, p50_ms, p99_ms, ...}``. Wire faults (``--wire-loss`` ...) run the store in a network
namespace of its own. With ``--flood N``: one till's gossip port is held by N idle connections
while its POS sells, and the sale latencies with and without the flood are printed.
"""

from __future__ import annotations

import argparse
import functools
import random
import sys
import tempfile
import time
from pathlib import Path

import trio

from posswarm.errors import PosswarmError
from tools import keyless_proxy
from tools.bench import print_result
from tools.bench_gossip_flood import run_flood
from tools.netsim import netns
from tools.netsim.isolated import require_own_namespace, run_scenario_isolated
from tools.netsim.wire import Addresses, Wire, cut_commands, setup_commands
from tools.pos_ledger import PosLedger
from tools.pos_till import Shop, ring
from tools.sales_rig import Rig, cache_sales, central_sales, outbox_sales, percentile
from tools.sales_verdict import exactly_once, verdict

KILL_STARTING = 0.25  # share of kills aimed at a node still starting, when one is


async def _cut(start: float, seconds: float, a: str | None, b: str, stats: dict, label: str) -> None:
    """A partition on the wire: from ``start`` s on, for ``seconds``, nothing passes between ``a`` and ``b``."""
    await trio.sleep(start)
    await trio.to_thread.run_sync(netns.apply, cut_commands(a, b))
    try:
        await trio.sleep(seconds)
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(netns.apply, cut_commands(a, b, heal=True))
            stats[label] += 1


async def _chaos(rig: Rig, kill_every: float, outage: float, rng: random.Random, stats: dict) -> None:
    """One long cache outage near the start and, meanwhile and after, a SIGKILL about every ``kill_every`` s.

    A victim may be serving or still starting (a quarter of the kills pick a node that is starting
    when there is one: more, and on a busy machine nodes that start slowly never serve); it is started again 0.2-1 s later, and again if it is killed on the way up.
    """
    in_outage = trio.Event()

    async def restart(name: str, delay: float) -> None:
        await trio.sleep(delay)
        while True:
            try:
                return await rig.start(name)
            except PosswarmError:
                pass  # killed before it served: its service manager starts it again

    async def cache_outage() -> None:
        await trio.sleep(1.0)
        await rig.kill("cache")
        stats["cache_kills"] += 1
        in_outage.set()
        await trio.sleep(outage)
        stats["outages"] += 1
        await restart("cache", 0)

    async def kills(nursery: trio.Nursery) -> None:
        while True:
            await trio.sleep(kill_every * rng.uniform(0.6, 1.4))
            running = [name for name in ["cache", *rig.device_names] if rig.running(name)]
            starting = [name for name in running if name in rig.starting]
            if not running:
                continue
            victim = rng.choice(starting if starting and rng.random() < KILL_STARTING else running)
            if stats["device_kills"] and not stats["cache_kills"] and "cache" in running:
                victim = "cache"  # a short run must see both kinds die, whatever the dice say
            was_starting = victim in rig.starting
            await rig.kill(victim)
            stats["cache_kills" if victim == "cache" else "device_kills"] += 1
            stats["kills_while_starting"] += was_starting
            # a node killed while starting is restarted by the task that was starting it
            if not was_starting and (victim != "cache" or not in_outage.is_set() or stats["outages"]):
                nursery.start_soon(restart, victim, rng.uniform(0.2, 1.0))

    async with trio.open_nursery() as nursery:
        if outage > 0:
            nursery.start_soon(cache_outage)
        if kill_every > 0:
            nursery.start_soon(kills, nursery)


async def run_scenario(root: Path, *, devices: int = 3, sales: int = 300, drop: float = 0.0, dup: float = 0.0,
                       reorder: float = 0.0, kill_every: float = 0.0, cache_outage: float = 0.0, rate: float = 20.0,
                       drain_timeout: float = 60.0, seed: int | None = None, keyless: bool = False,
                       pos_timeout: float = 5.0, wire: dict | None = None) -> dict:
    """Run the whole scenario; the verdict compares central's export with the POS's own ledger.

    ``keyless``: every POS talks to its till through a proxy that drops the Idempotency-Key
    (tools/keyless_proxy.py), the build a duplicate-blind verdict would pass. ``wire``: the
    fields of :class:`tools.netsim.wire.Wire`; only inside a namespace of the run's own
    (:func:`tools.netsim.isolated.run_scenario_isolated`).
    """
    rng = random.Random(seed)
    faults = ",".join(f"{k}={v}" for k, v in (("drop", drop), ("dup", dup), ("reorder", reorder)) if v)
    rig = Rig(root, devices, faults=faults)
    on_wire = Wire(**(wire or {}))
    stats = {"cache_kills": 0, "device_kills": 0, "kills_while_starting": 0, "outages": 0, "till_cuts": 0,
             "central_cuts": 0}
    shop = Shop(PosLedger(root / "pos-ledger.sqlite"), sales)
    try:
        if wire:
            require_own_namespace("wire faults")
            where = Addresses(rig.central_address, rig.address("cache"),
                              tuple(rig.address(name) for name in rig.device_names), f"127.{rig.net}.2.0/24")
            await trio.to_thread.run_sync(netns.apply, setup_commands(on_wire, where))
        with trio.fail_after(120):
            await rig.start_all()
            await rig.wait_connected()
        started = time.monotonic()
        async with trio.open_nursery() as proxies:
            urls = {name: functools.partial(rig.api_url, name) for name in rig.device_names}
            for name in urls if keyless else ():
                urls[name] = functools.partial(str, await proxies.start(keyless_proxy.run, urls[name]))
            async with trio.open_nursery() as selling:
                for i, (name, url_of) in enumerate(urls.items()):
                    selling.start_soon(functools.partial(ring, shop, name, url_of, rate, random.Random(rng.random()),
                                                         timeout=pos_timeout,
                                                         local_address=rig.pos_address(i) if wire else None))
                async with trio.open_nursery() as chaos:
                    chaos.start_soon(_chaos, rig, kill_every, cache_outage, rng, stats)
                    if on_wire.central_cut_s:
                        chaos.start_soon(_cut, 1.0, on_wire.central_cut_s, None, rig.central_address, stats,
                                         "central_cuts")
                    if on_wire.till_cut_s:
                        chaos.start_soon(_cut, 2.0, on_wire.till_cut_s, rig.address(rig.device_names[0]),
                                         rig.address("cache"), stats, "till_cuts")
                    limit = max(120.0, 10 * sales / (rate * devices))
                    with trio.move_on_after(limit):  # and, when killing, until both kinds have died once
                        while shop.quota > 0 or (kill_every > 0 and not (stats["device_kills"] and stats["cache_kills"])):
                            await trio.sleep(0.1)
                    if shop.quota > 0:
                        raise PosswarmError(f"sales scenario: {shop.quota} of {sales} sales still unrung after {limit:.0f} s"
                                            f" ({shop.ledger.outcomes()}); tills down, or too slow to start between kills?")
                    chaos.cancel_scope.cancel()
                for name in ["cache", *rig.device_names]:  # the chaos may have left one down
                    if not rig.alive(name):
                        await rig.start(name)
            proxies.cancel_scope.cancel()
        selling_s = time.monotonic() - started
        drained_at = time.monotonic()
        with trio.move_on_after(drain_timeout):  # settled: central holds what the outboxes hold
            while {row[:3] for row in central_sales(rig)} != set(outbox_sales(rig)):
                await trio.sleep(0.25)
        drain_s = time.monotonic() - drained_at
        exported = await rig.export()
        found = verdict(await trio.to_thread.run_sync(shop.ledger.attempted), exported)
        latencies = [row[4] for row in cache_sales(rig)]
        return {
            "devices": devices, "sales": sales, "drop": drop, "dup": dup, "reorder": reorder,
            "kill_every_s": kill_every, "cache_outage_s": cache_outage, "keyless": keyless, "wire": wire,
            **found,
            "attempts": shop.ledger.outcomes(),
            "in_outboxes": len(outbox_sales(rig)),
            "at_cache": len(latencies),
            "at_central": len(exported),
            "pos_p99_ms": percentile([round(ms) for ms in shop.latencies_ms], 99),
            "p50_ms": percentile(latencies, 50),
            "p99_ms": percentile(latencies, 99),
            "selling_s": round(selling_s, 1),
            "drain_s": round(drain_s, 1),
            **stats,
        }
    finally:
        with trio.CancelScope(shield=True):
            await rig.stop_all()
        shop.ledger.close()


# flag, field of tools.netsim.wire.Wire, type, help
WIRE_OPTIONS = (
    ("--wire-loss", "loss", float, "drop P of packets till<->cache and cache<->central"),
    ("--wire-reset", "reset", float, "answer P of those packets with a TCP reset"),
    ("--answer-loss", "answer_loss", float, "drop P of packets from the tills' API to the POS"),
    ("--central-kbit", "central_kbit", int, "throttle cache<->central to KBIT (tc tbf)"),
    ("--till-cut", "till_cut_s", float, "cut till-01 off from the cache (not from the other tills) for SEC"),
    ("--central-cut", "central_cut_s", float, "cut the cache off from central for SEC"),
)


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
    p.add_argument("--pos-timeout", type=float, default=5.0, help="the POS gives up waiting for an answer after SEC, then retries")
    wire = p.add_argument_group("faults on the wire (the run gets a network namespace of its own; needs root)")
    for flag, name, kind, text in WIRE_OPTIONS:
        wire.add_argument(flag, dest=name, type=kind, default=kind(0), help=text)
    p.add_argument("--keyless", action="store_true",
                   help="send every sale through a proxy that drops the Idempotency-Key (the verdict must then fail)")
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
            on_wire = {name: getattr(args, name) for _, name, _, _ in WIRE_OPTIONS if getattr(args, name)}
            scenario = dict(devices=args.devices, sales=args.sales, drop=args.drop, dup=args.dup, reorder=args.reorder,
                            kill_every=args.kill_every, cache_outage=args.cache_outage, rate=args.rate, seed=args.seed,
                            keyless=args.keyless, pos_timeout=args.pos_timeout, wire=on_wire or None)
            run = run_scenario_isolated if on_wire else run_scenario
            try:
                result = trio.run(lambda: run(root, **scenario))
            except PosswarmError as exc:
                print(f"posswarm-bench sales: {exc}", file=sys.stderr)
                return 1
    print_result(result, args.json)
    if args.flood:
        ok = result["failed"] == 0 and result["committed"] == result["at_cache"] == 2 * args.sales
    else:
        ok = exactly_once(result)
    if not ok:
        print("posswarm-bench sales: FAILED: by the POS's own ledger, sales were lost, stored twice, stored from"
              " nowhere or with other totals (see examples); the --keep directory holds every file", file=sys.stderr)
    return 0 if ok else 1
