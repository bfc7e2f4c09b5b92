"""``posswarm-bench sku --stores N``: a price change imported at central, timed until every till of N stores shows it.

Real: central's seeder process (HTTPS, signing with the SKU key, the long-poll route), and per store a cache
(``CacheData``: its long-poll of central, signature checks, push to the tills, anti-entropy) and its tills
(``DeviceData``: SQLite replica, snapshot and signature checks), each with its own gossip channel over mutual
TLS on its own loopback address. Not real: the caches and tills are not separate processes; they share this
one process (one core), since 100 caches and their tills as node processes do not fit on 2 cores.
"""

from __future__ import annotations

import datetime
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import trio

from posswarm.errors import PosswarmError
from posswarm.gossip.driver import StoreChannel
from posswarm.identity.credential import Credential, load_credential
from posswarm.identity.tls import central_context
from posswarm.keys import KeyRing, load_private_key
from posswarm.storedata.cache import CacheData
from posswarm.storedata.device import DeviceData
from seeder.sku import CentralCatalog
from tools.bench_sku import Replicas, _row, _rows, _within
from tools.sales_rig import Rig, percentile

# Generous: what these wait on is named when they fail; a stuck store shows as its tills' counts.
FILL_S = 600.0
CHANGE_S = 120.0
POLL_S = 0.05


@dataclass
class Store:
    cache: CacheData
    tills: list[DeviceData]


class Stores:
    """N stores' caches and tills in this process, each node with its credential from central's enrolment key."""

    def __init__(self, rig: Rig, stores: int, tills: int) -> None:
        self.rig, self.count, self.tills_per_store = rig, stores, tills
        keys = rig.central_keys
        self._enrolment = (load_private_key(keys.key("enrolment")).public_key(),)
        self._sku_keys = KeyRing([load_private_key(keys.key("sku")).public_key()])
        self._tls = central_context(keys.authority)
        self.stores: list[Store] = []
        self.sku_files: dict[str, Path] = {}  # till -> its replica file, read by the benchmark alongside the till

    def _credential(self, store: str, node: str, role: str) -> Credential:
        out = self.rig.root / "nodes" / f"{node}.identity"
        self.rig.central_keys.enrol(out, node_id=node, store=store, role=role,
                                    device_class="cache" if role == "cache" else "pos")
        return load_credential(out, self._enrolment, now=datetime.datetime.now(datetime.UTC))

    async def start(self, nursery: trio.Nursery) -> None:
        # Each node process has trio's 40 worker threads for its SQLite calls; nodes sharing this process
        # would otherwise queue for the same 40 (a till waiting on a cache it never talks to).
        trio.to_thread.current_default_thread_limiter().total_tokens = 40 * self.count * (1 + self.tills_per_store)
        async with trio.open_nursery() as starting:
            for s in range(self.count):
                starting.start_soon(self._start_store, nursery, s)

    async def _start_store(self, nursery: trio.Nursery, s: int) -> None:
        store = f"{self.rig.store}-{s:03d}"
        address = f"127.{self.rig.net}.{s + 1}"  # one /24 per store: the per-address limits hold per store
        data = self.rig.root / "nodes" / store
        data.mkdir(parents=True)
        credential = self._credential(store, f"cache-{s:03d}{self.rig.id_suffix}", "cache")
        channel = StoreChannel(credential=credential, address=f"{address}.1")
        await nursery.start(channel.run)
        cache = CacheData(channel, ledger_path=str(data / "cache-ledger.sqlite"), sku_path=str(data / "cache-sku.sqlite"),
                          store=store, central_url=self.rig.seeder_url, central_tls=self._tls,
                          sku_keys=self._sku_keys, credential=credential)
        await nursery.start(cache.run)
        tills = []
        for t in range(self.tills_per_store):
            node = f"till-{s:03d}-{t:02d}{self.rig.id_suffix}"
            till_channel = StoreChannel(credential=self._credential(store, node, "device"),
                                        address=f"{address}.{10 + t}")
            await nursery.start(till_channel.run)
            self.sku_files[node] = data / f"{node}-sku.sqlite"
            till = DeviceData(till_channel, outbox_path=str(data / f"{node}-outbox.sqlite"),
                              sku_path=str(self.sku_files[node]), device_id=node, sku_keys=self._sku_keys)
            await nursery.start(till.run)
            till_channel.add_peer(channel.node_id, f"{address}.1", channel.port)
            tills.append(till)
        self.stores.append(Store(cache, tills))


class Looks:
    """The tills' replica files read in one worker thread per pass, not through each till's own calls: asked
    node by node, a pass queued 200 times behind the tills' anti-entropy in an event loop already short of CPU."""

    def __init__(self, rig: Rig, files: dict[str, Path]) -> None:
        self.tills = sorted(files)
        self._replicas = Replicas(rig, path_of=files.__getitem__)

    async def prices(self, code: str) -> list[int | None]:
        return await trio.to_thread.run_sync(lambda: [self._replicas.price(till, code) for till in self.tills])

    async def held(self) -> list[int]:
        return await trio.to_thread.run_sync(lambda: [self._replicas.count(till) for till in self.tills])

    def close(self) -> None:
        self._replicas.close()


class CpuShare:
    """Cores this process used since the last :meth:`reset` (its SQLite threads included), and the share of one
    core its event loop's thread used: near 1.0, every node's work queues in that one loop."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._cpu, self._loop, self._wall = time.process_time(), time.thread_time(), time.monotonic()

    def __call__(self) -> float:
        return (time.process_time() - self._cpu) / max(time.monotonic() - self._wall, 1e-9)

    def loop(self) -> float:
        return (time.thread_time() - self._loop) / max(time.monotonic() - self._wall, 1e-9)


async def run_stores(root: Path, *, stores: int, tills: int, skus: int, changes: int, seed: int | None) -> dict:
    rng = random.Random(seed)
    rig = Rig(root, 0, id_suffix=f"-{random.getrandbits(24):06x}")
    catalog = CentralCatalog(str(rig.central_data / "sku.sqlite"))
    catalog.import_rows(_rows(skus))
    try:
        await rig.start_central()
        run = Stores(rig, stores, tills)
        looks: Looks | None = None
        try:
            async with trio.open_nursery() as nursery:
                started = time.monotonic()
                await run.start(nursery)
                up_s = time.monotonic() - started
                print(f"sku stores: {stores} stores up in {up_s:.1f} s", file=sys.stderr, flush=True)
                looks, cpu = Looks(rig, run.sku_files), CpuShare()
                held: list[int] = []

                def fill_state() -> str:
                    short = [n for n in held if n < skus]
                    return (f"{len(short)} of {len(held)} tills short of {skus:,} SKUs (fewest: {min(held, default=0):,});"
                            f" this process used {cpu():.2f} cores meanwhile")

                # The stores are fed at once, and each cache checks every entry of its first pull from central.
                async with _within(FILL_S, "every till of every store to hold the catalog", fill_state):
                    while True:
                        held[:] = await looks.held()
                        if all(n >= skus for n in held):
                            break
                        await trio.sleep(0.5)
                fill_s = time.monotonic() - started
                print(f"sku stores: every till holds {skus:,} SKUs after {fill_s:.1f} s", file=sys.stderr, flush=True)
                per_till, every_till = [], []
                fill_cores, fill_loop = cpu(), cpu.loop()
                cpu.reset()
                for n in range(changes):
                    row = dict(_row(rng.randrange(skus)), price_cents=20_000 + n)
                    changed_at = time.monotonic()
                    await trio.to_thread.run_sync(lambda: catalog.import_rows([row]))
                    seen: dict[int, float] = {}
                    async with _within(CHANGE_S, f"price change {n + 1} ({row['code']}) to reach every till",
                                       lambda: f"{len(seen)} of {len(looks.tills)} tills show it;"
                                               f" this process used {cpu():.2f} cores during the changes,"
                                               f" its event loop {cpu.loop():.0%} of one"):
                        while len(seen) < len(looks.tills):
                            prices = await looks.prices(row["code"])
                            now = time.monotonic()  # after the pass: an upper bound of when each till showed it
                            for i, price in enumerate(prices):
                                if price == row["price_cents"] and i not in seen:
                                    seen[i] = now - changed_at
                            await trio.sleep(POLL_S)
                    per_till.extend(seen.values())
                    every_till.append(max(seen.values()))
                change_cores, change_loop = cpu(), cpu.loop()
                nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:  # the nodes' nursery wraps what the waits raise
            failed = group.subgroup(PosswarmError)
            if failed is None:
                raise
            while isinstance(failed, BaseExceptionGroup):
                failed = failed.exceptions[0]
            raise failed from None
        return {
            "stores": stores, "tills_per_store": tills, "tills": stores * tills, "skus": skus,
            "stores_started_s": round(up_s, 2), "every_till_full_catalog_s": round(fill_s, 2),
            "price_change_to_a_till_p50_s": round(percentile(per_till, 50), 3),
            "price_change_to_a_till_p99_s": round(percentile(per_till, 99), 3),
            "price_change_to_every_till_p50_s": round(percentile(every_till, 50), 3),
            "price_change_to_every_till_p99_s": round(percentile(every_till, 99), 3),
            "price_changes": changes,
            # Of the machine's cores, what the one process of all caches and tills used: near 1 it is saturated,
            # and the figures are of one overloaded event loop, not of stores on their own hardware.
            "bench_process_cores_during_fill": round(fill_cores, 2),
            "bench_process_cores_during_changes": round(change_cores, 2),
            "bench_event_loop_share_during_fill": round(fill_loop, 2),
            "bench_event_loop_share_during_changes": round(change_loop, 2),
        }
    finally:
        if looks is not None:
            looks.close()
        catalog.close()
        with trio.CancelScope(shield=True):
            await rig.stop_all()
