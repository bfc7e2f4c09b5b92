"""``posswarm-bench sku --stores N``: a price change imported at central, timed until every till of N stores shows it.

Real: central's seeder process (HTTPS, signing with the SKU key, the long-poll route), and per store a cache
(``CacheData``: its long-poll of central, signature checks, push to the tills, anti-entropy) and its tills
(``DeviceData``: SQLite replica, snapshot and signature checks), each with its own gossip channel over mutual
TLS on its own loopback address. Not real: a store's cache and tills are not processes of their own; the
stores are shared out over ``--processes`` store processes (``python -m tools.sku_stores SLICE``, default one
a core), since 100 caches and their tills as node processes do not fit on 2 cores. This process imports the
changes and reads the tills' replica files; it runs no node.
"""

from __future__ import annotations

import datetime
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import trio

from posswarm import logs
from posswarm.errors import PosswarmError
from posswarm.gossip.driver import StoreChannel
from posswarm.identity.credential import Credential, load_credential
from posswarm.identity.tls import central_context
from posswarm.keys import KeyRing, load_private_key
from posswarm.storedata.cache import CacheData
from posswarm.storedata.device import DeviceData
from seeder.keys_cli import CentralKeys
from seeder.sku import CentralCatalog
from tools.bench_sku import Replicas, _row, _rows, _within
from tools.sales_rig import Rig, percentile

# Generous: what these wait on is named when they fail; a stuck store shows as its tills' counts.
FILL_S = 600.0
CHANGE_S = 120.0
POLL_S = 0.05
STOP_S = 20.0


@dataclass(frozen=True)
class StoreSlice:
    """The stores one store process runs: numbers ``first`` .. ``first + count - 1`` of the run (JSON on its argv)."""

    root: str
    keys: str
    seeder_url: str
    store_prefix: str
    net: int
    id_suffix: str
    first: int
    count: int
    tills: int

    def store(self, s: int) -> str:
        return f"{self.store_prefix}-{s:03d}"

    def till(self, s: int, t: int) -> str:
        return f"till-{s:03d}-{t:02d}{self.id_suffix}"

    def data(self, s: int) -> Path:
        return Path(self.root) / "nodes" / self.store(s)

    def sku_files(self) -> dict[str, Path]:
        """Each till of the slice -> its replica file, read by the benchmark alongside the till."""
        return {self.till(s, t): self.data(s) / f"{self.till(s, t)}-sku.sqlite"
                for s in range(self.first, self.first + self.count) for t in range(self.tills)}


def slices(rig: Rig, stores: int, tills: int, processes: int) -> list[StoreSlice]:
    """``stores`` shared out over at most ``processes`` store processes, in contiguous runs."""
    processes = max(1, min(processes, stores))
    base, extra = divmod(stores, processes)
    out, first = [], 0
    for i in range(processes):
        count = base + (1 if i < extra else 0)
        out.append(StoreSlice(str(rig.root), str(rig.central_keys.dir), rig.seeder_url or "", rig.store, rig.net,
                              rig.id_suffix, first, count, tills))
        first += count
    return out


class Stores:
    """One slice's stores' caches and tills in this process, each node with its credential from central's enrolment key."""

    def __init__(self, plan: StoreSlice) -> None:
        self.plan = plan
        self.keys = CentralKeys(Path(plan.keys))
        self._enrolment = (load_private_key(self.keys.key("enrolment")).public_key(),)
        self._sku_keys = KeyRing([load_private_key(self.keys.key("sku")).public_key()])
        self._tls = central_context(self.keys.authority)

    def _credential(self, store: str, node: str, role: str) -> Credential:
        out = Path(self.plan.root) / "nodes" / f"{node}.identity"
        self.keys.enrol(out, node_id=node, store=store, role=role, device_class="cache" if role == "cache" else "pos")
        return load_credential(out, self._enrolment, now=datetime.datetime.now(datetime.UTC))

    async def start(self, nursery: trio.Nursery) -> None:
        # Each node process has trio's 40 worker threads for its SQLite calls; nodes sharing this process
        # would otherwise queue for the same 40 (a till waiting on a cache it never talks to).
        trio.to_thread.current_default_thread_limiter().total_tokens = 40 * self.plan.count * (1 + self.plan.tills)
        async with trio.open_nursery() as starting:
            for s in range(self.plan.first, self.plan.first + self.plan.count):
                starting.start_soon(self._start_store, nursery, s)

    async def _start_store(self, nursery: trio.Nursery, s: int) -> None:
        plan, store = self.plan, self.plan.store(s)
        address = f"127.{plan.net}.{s + 1}"  # one /24 per store: the per-address limits hold per store
        data = plan.data(s)
        data.mkdir(parents=True)
        credential = self._credential(store, f"cache-{s:03d}{plan.id_suffix}", "cache")
        channel = StoreChannel(credential=credential, address=f"{address}.1")
        await nursery.start(channel.run)
        cache = CacheData(channel, ledger_path=str(data / "cache-ledger.sqlite"), sku_path=str(data / "cache-sku.sqlite"),
                          store=store, central_url=plan.seeder_url, central_tls=self._tls,
                          sku_keys=self._sku_keys, credential=credential)
        await nursery.start(cache.run)
        for t in range(plan.tills):
            node = plan.till(s, t)
            till_channel = StoreChannel(credential=self._credential(store, node, "device"),
                                        address=f"{address}.{10 + t}")
            await nursery.start(till_channel.run)
            till = DeviceData(till_channel, outbox_path=str(data / f"{node}-outbox.sqlite"),
                              sku_path=str(data / f"{node}-sku.sqlite"), device_id=node, sku_keys=self._sku_keys)
            await nursery.start(till.run)
            till_channel.add_peer(channel.node_id, f"{address}.1", channel.port)


async def serve_slice(plan: StoreSlice) -> None:
    """A store process: run the slice's stores, say ``ready`` on stdout once all are up, stop on SIGTERM."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as stop:
        async with trio.open_nursery() as nursery:
            await Stores(plan).start(nursery)
            print("ready", flush=True)
            async for _ in stop:
                nursery.cancel_scope.cancel()
                break


def _cpu_s(pid: int, thread: int | None = None) -> float:
    """utime + stime of a process (or of one of its threads) from /proc, in seconds; 0 once it is gone."""
    path = f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat"
    try:
        fields = Path(path).read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class StoreProcesses:
    """The store processes of a run: started, watched (one that dies fails the run, naming its log), stopped."""

    def __init__(self, rig: Rig, plans: list[StoreSlice]) -> None:
        self.plans, self._logs = plans, [rig.logs / f"stores-{i}.log" for i in range(len(plans))]
        self._procs: list[trio.Process] = []
        self.reset()

    async def start(self) -> None:
        """Every store process started and its stores up, within FILL_S (a one-line error otherwise)."""
        for plan, log in zip(self.plans, self._logs):
            with log.open("ab") as err:
                self._procs.append(await trio.lowlevel.open_process(
                    [sys.executable, "-m", "tools.sku_stores", json.dumps(asdict(plan))],
                    stdout=subprocess.PIPE, stderr=err, cwd=Path(__file__).parent.parent))
        with trio.move_on_after(FILL_S) as waited:
            try:
                async with trio.open_nursery() as nursery:
                    for proc, plan, log in zip(self._procs, self.plans, self._logs):
                        nursery.start_soon(self._until_ready, proc, plan, log)
            except BaseExceptionGroup as group:
                failed = group.subgroup(PosswarmError)
                if failed is None:
                    raise
                raise failed.exceptions[0] from None
        if waited.cancelled_caught:
            raise PosswarmError(f"the store processes' stores were not all up within {FILL_S:.0f} s: see "
                                f"{self._logs[0].parent}/stores-*.log")

    @staticmethod
    async def _until_ready(proc: trio.Process, plan: StoreSlice, log: Path) -> None:
        said = b""
        while b"ready" not in said:
            got = await proc.stdout.receive_some(64)
            if not got:
                raise PosswarmError(f"store process for stores {plan.first}..{plan.first + plan.count - 1} exited "
                                    f"before its stores were up (code {await proc.wait()}): see {log}")
            said += got

    def check(self) -> None:
        for proc, log in zip(self._procs, self._logs):
            if proc.poll() is not None:
                raise PosswarmError(f"a store process exited mid-run (code {proc.returncode}): see {log}")

    def _cpu(self) -> list[tuple[float, float]]:
        return [(_cpu_s(p.pid), _cpu_s(p.pid, p.pid)) for p in self._procs]

    def reset(self) -> None:
        self._at, self._wall = self._cpu(), time.monotonic()

    def cores(self) -> float:
        """Cores the store processes used together since :meth:`reset` (their SQLite threads included)."""
        return sum(c - c0 for (c, _), (c0, _) in zip(self._cpu(), self._at)) / max(time.monotonic() - self._wall, 1e-9)

    def busiest_loop(self) -> float:
        """The largest share of one core a store process's event-loop thread used: near 1, its nodes queue in it."""
        shares = [loop - loop0 for (_, loop), (_, loop0) in zip(self._cpu(), self._at)]
        return max(shares, default=0.0) / max(time.monotonic() - self._wall, 1e-9)

    async def stop(self) -> None:
        for proc in self._procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        with trio.move_on_after(STOP_S):
            for proc in self._procs:
                await proc.wait()
        for proc in self._procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            if proc.stdout is not None:
                await proc.stdout.aclose()


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
    """Cores this process used since the last :meth:`reset` (its reading threads included)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._cpu, self._wall = time.process_time(), time.monotonic()

    def __call__(self) -> float:
        return (time.process_time() - self._cpu) / max(time.monotonic() - self._wall, 1e-9)


async def run_stores(root: Path, *, stores: int, tills: int, skus: int, changes: int, seed: int | None,
                     processes: int | None = None) -> dict:
    rng = random.Random(seed)
    rig = Rig(root, 0, id_suffix=f"-{random.getrandbits(24):06x}")
    catalog = CentralCatalog(str(rig.central_data / "sku.sqlite"))
    catalog.import_rows(_rows(skus))
    looks: Looks | None = None
    workers: StoreProcesses | None = None
    try:
        await rig.start_central()
        plans = slices(rig, stores, tills, processes or os.cpu_count() or 1)
        workers = StoreProcesses(rig, plans)
        started = time.monotonic()
        await workers.start()
        up_s = time.monotonic() - started
        print(f"sku stores: {stores} stores up in {up_s:.1f} s in {len(plans)} store processes", file=sys.stderr,
              flush=True)
        files = {till: path for plan in plans for till, path in plan.sku_files().items()}
        looks, cpu = Looks(rig, files), CpuShare()
        workers.reset()
        held: list[int] = []

        def fill_state() -> str:
            short = [n for n in held if n < skus]
            return (f"{len(short)} of {len(held)} tills short of {skus:,} SKUs (fewest: {min(held, default=0):,});"
                    f" the store processes used {workers.cores():.2f} cores meanwhile")

        # The stores are fed at once, and each cache checks every entry of its first pull from central.
        async with _within(FILL_S, "every till of every store to hold the catalog", fill_state):
            while True:
                workers.check()
                held[:] = await looks.held()
                if all(n >= skus for n in held):
                    break
                await trio.sleep(0.5)
        fill_s = time.monotonic() - started
        print(f"sku stores: every till holds {skus:,} SKUs after {fill_s:.1f} s", file=sys.stderr, flush=True)
        fill = (cpu(), workers.cores(), workers.busiest_loop())
        per_till, every_till = [], []
        cpu.reset()
        workers.reset()
        for n in range(changes):
            row = dict(_row(rng.randrange(skus)), price_cents=20_000 + n)
            changed_at = time.monotonic()
            await trio.to_thread.run_sync(lambda: catalog.import_rows([row]))
            seen: dict[int, float] = {}
            async with _within(CHANGE_S, f"price change {n + 1} ({row['code']}) to reach every till",
                               lambda: f"{len(seen)} of {len(looks.tills)} tills show it;"
                                       f" the store processes used {workers.cores():.2f} cores during the changes,"
                                       f" the busiest event loop {workers.busiest_loop():.0%} of one"):
                while len(seen) < len(looks.tills):
                    workers.check()
                    prices = await looks.prices(row["code"])
                    now = time.monotonic()  # after the pass: an upper bound of when each till showed it
                    for i, price in enumerate(prices):
                        if price == row["price_cents"] and i not in seen:
                            seen[i] = now - changed_at
                    await trio.sleep(POLL_S)
            per_till.extend(seen.values())
            every_till.append(max(seen.values()))
        change = (cpu(), workers.cores(), workers.busiest_loop())
        return {
            "stores": stores, "tills_per_store": tills, "tills": stores * tills, "skus": skus,
            "store_processes": len(plans),
            "stores_started_s": round(up_s, 2), "every_till_full_catalog_s": round(fill_s, 2),
            "price_change_to_a_till_p50_s": round(percentile(per_till, 50), 3),
            "price_change_to_a_till_p99_s": round(percentile(per_till, 99), 3),
            "price_change_to_every_till_p50_s": round(percentile(every_till, 50), 3),
            "price_change_to_every_till_p99_s": round(percentile(every_till, 99), 3),
            "price_changes": changes,
            # Of the machine's cores, what the store processes used together, and the busiest one's event loop:
            # near 1, that process is saturated and the figures are of an overloaded event loop, not of stores on
            # their own hardware. The benchmark's own looks into the replicas are this process's share.
            "store_processes_cores_during_fill": round(fill[1], 2),
            "store_processes_cores_during_changes": round(change[1], 2),
            "busiest_store_loop_share_during_fill": round(fill[2], 2),
            "busiest_store_loop_share_during_changes": round(change[2], 2),
            "bench_process_cores_during_fill": round(fill[0], 2),
            "bench_process_cores_during_changes": round(change[0], 2),
        }
    finally:
        if looks is not None:
            looks.close()
        catalog.close()
        with trio.CancelScope(shield=True):
            if workers is not None:
                await workers.stop()
            await rig.stop_all()


def main(argv: list[str]) -> int:
    """A store process of ``run_stores``: ``python -m tools.sku_stores SLICE_JSON``."""
    logs.configure("warning", component="bench-stores")  # hundreds of nodes in one process: info lines cost CPU
    try:
        plan = StoreSlice(**json.loads(argv[0]))
    except (IndexError, TypeError, ValueError) as exc:
        print(f"tools.sku_stores: expected one StoreSlice as JSON on the command line ({exc})", file=sys.stderr)
        return 2
    trio.run(serve_slice, plan)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
