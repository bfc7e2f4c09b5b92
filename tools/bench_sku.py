"""``posswarm-bench sku``: the SKU catalog to a fresh till, and one price change to every till of a store.

Real processes on loopback (seeder signing with the SKU key, cache, N devices). Measures (1) from a fresh
device's process start, and from its store-data service being up, until its replica holds the whole catalog;
(2) per price change imported at central, the time until every device's replica shows it; (3) in this
process, what central's signature costs: entries/s central signs, and entries/s a till applies with and
without checking the signatures. With ``--stores N``, instead: a price change to every till of N stores
(tools/sku_stores.py).
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from pathlib import Path

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from posswarm import logs
from posswarm.errors import PosswarmError
from posswarm.keys import KeyRing
from posswarm.sku.catalog import SkuReplica, bucket_of
from posswarm.sku.entry import SkuEntry
from posswarm.sku.rows import BUCKET, row_of
from posswarm.sku.signature import SkuSignatures
from posswarm.sku.snapshot import HeldSnapshot
from posswarm.sku.transfer import apply_rows
from seeder.sku import CentralCatalog
from tools.sales_rig import Rig, percentile


def _row(i: int) -> dict:
    return {"code": f"SKU{i:07d}", "barcode": f"{4000000000000 + i}", "name": f"Item number {i}",
            "price_cents": 100 + i % 9000, "tax_class": "A", "deleted": False, "line": i + 2}


def _rows(count: int) -> list[dict]:
    return [_row(i) for i in range(count)]


CENTRAL = "central"


class BenchFailed(PosswarmError):
    """What the benchmark waited for and did not see in time."""


@asynccontextmanager
async def _within(seconds: float, what: str, state: Callable[[], str] = lambda: ""):
    """Fail with one line naming ``what`` was awaited (and ``state``, how far it got), not a bare TooSlowError."""
    try:
        with trio.fail_after(seconds):
            yield
    except trio.TooSlowError:
        got = state()
        raise BenchFailed(f"sku bench: waited {seconds:.0f} s for {what}" + (f"; {got}" if got else "")
                          + " (a loaded machine: see the nodes' logs with --keep DIR)") from None


def _storedata(rig: Rig, name: str) -> dict:
    """The node's ``storedata`` status (status.json, rewritten by the node every few seconds)."""
    try:
        return json.loads((rig.data_dir(name) / "status.json").read_text())["storedata"]
    except (OSError, ValueError, KeyError):
        return {}


def _held(replicas: Replicas, names: list[str], skus: int) -> str:
    return ", ".join(f"{name} holds {replicas.count(name):,} of {skus:,} SKUs" for name in names)


# A bulk wait fails only when nothing moved for this long: on a loaded host (load 11 on 2 cores) filling
# 100k took longer than any fixed deadline chosen on a quiet one, while a stuck transfer never moves at all.
STALL_S = 120.0


async def _until_held(what: str, progress: Callable[[], int], done: Callable[[], bool], state: Callable[[], str],
                      poll_s: float) -> None:
    """Wait until ``done``; fail with one line naming ``what`` (and ``state``) once ``progress`` stalls STALL_S."""
    seen, moved = progress(), time.monotonic()
    while True:
        asked = time.monotonic()
        if done():
            return
        # COUNT(*) over 1M rows takes a good part of a second of the nodes' CPU: never more than a fifth of it.
        await trio.sleep(max(poll_s, 4 * (time.monotonic() - asked)))
        if (now := progress()) != seen:
            seen, moved = now, time.monotonic()
        elif time.monotonic() - moved > STALL_S:
            raise BenchFailed(f"sku bench: {what}: nothing moved for {STALL_S:.0f} s; {state()}"
                              " (stuck: see the nodes' logs with --keep DIR)")


class Replicas:
    """Read-only looks into each node's sku.sqlite (the node writes it; WAL lets us read alongside)."""

    def __init__(self, rig: Rig, path_of: Callable[[str], Path] | None = None) -> None:
        self.rig = rig
        self._path_of = path_of or (lambda name: (rig.central_data if name == CENTRAL else rig.data_dir(name)) / "sku.sqlite")
        self._db: dict[str, sqlite3.Connection] = {}

    def _conn(self, name: str) -> sqlite3.Connection | None:
        if name not in self._db:
            path = self._path_of(name)
            if not path.exists():
                return None
            self._db[name] = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10, check_same_thread=False)
        return self._db[name]

    def count(self, name: str) -> int:
        return self._scalar(name, "SELECT COUNT(*) FROM sku WHERE deleted = 0")

    def signed(self, name: str) -> int:
        """Entries signed (central's file: how far its signer got)."""
        return self._scalar(name, "SELECT COUNT(*) FROM sku WHERE signature != x''")

    def _scalar(self, name: str, query: str) -> int:
        db = self._conn(name)
        try:
            return db.execute(query).fetchone()[0] if db else 0
        except sqlite3.OperationalError:  # schema not created yet
            return 0

    def price(self, name: str, code: str) -> int | None:
        db = self._conn(name)
        try:
            row = db.execute("SELECT price_cents FROM sku WHERE code = ?", (code,)).fetchone() if db else None
        except sqlite3.OperationalError:
            return None
        return row[0] if row else None

    def close(self) -> None:
        for db in self._db.values():
            db.close()


def signature_costs(root: Path, count: int) -> dict:
    """Entries per CPU second (this process's, so a busy shared host skews it less than wall time): central
    signing (stamp, sign, commit), and a till applying them unchecked and checked."""
    key = Ed25519PrivateKey.generate()
    catalog = CentralCatalog(str(root / "sign-bench.sqlite"))
    try:
        catalog.import_rows(_rows(count))
        started, after, signed = time.process_time(), 0, 0
        while signed < count:
            done, after = catalog.sign_pending(key, after_hlc=after, now_ms=int(time.time() * 1000))
            signed += done
        sign_s = time.process_time() - started
        started = time.process_time()
        snapshot = catalog.take_snapshot(key)
        snapshot_s = time.process_time() - started
        entries = [SkuEntry.from_wire(w) for w in catalog.page(0, limit=count)["entries"]]
    finally:
        catalog.close()
    rates = {"central_sign_entries_per_cpu_s": round(count / sign_s), "central_snapshot_cpu_s": round(snapshot_s, 2)}
    signatures = SkuSignatures(KeyRing([key.public_key()]))
    held = HeldSnapshot(signatures)
    assert held.take(snapshot, source="bench")
    in_buckets = sorted(entries, key=lambda e: (bucket_of(e.code), e.code))  # the order a cache sends them in
    for label, check, sent in (
            ("unchecked", lambda batch: None, entries),
            ("checked", lambda batch: lambda e: signatures.accepted(e, source="bench"), entries),
            ("snapshot", lambda batch: held.check_for(batch, source="bench"), in_buckets)):
        replica = SkuReplica(str(root / f"apply-{label}.sqlite"))
        try:
            started = time.process_time()
            for start in range(0, count, 50_000):  # as a till commits a bulk transfer (APPLY_MAX)
                batch = sent[start:start + 50_000]
                replica.apply(batch, check=check(batch))
            rates[f"till_apply_{label}_entries_per_cpu_s"] = round(count / (time.process_time() - started))
        finally:
            replica.close()
    rates["till_apply_rows_entries_per_cpu_s"] = _rows_rate(root, in_buckets, held)
    assert signatures.refused == 0
    rates["till_snapshot_vouched_share"] = round(held.vouched / count, 3)
    return rates


def _rows_rate(root: Path, in_buckets: list[SkuEntry], held: HeldSnapshot) -> int:
    """Entries per CPU second a fresh till takes a transfer in as it does: decoded to rows, batches of >= 50k cut at a
    bucket's end, vouched buckets filled, the lookup indexes built after."""
    wires = [entry.to_wire() for entry in in_buckets]
    held, taken = HeldSnapshot(held.signatures), held.snapshot  # its own count of what was vouched for
    assert held.take(taken, source="bench")
    replica = SkuReplica(str(root / "apply-rows.sqlite"))
    try:
        started = time.process_time()
        rows, batch = [row_of(wire) for wire in wires], []
        for row in rows:
            if len(batch) >= 50_000 and row[BUCKET] != batch[-1][BUCKET]:
                apply_rows(replica, held, batch, now_ms=None, source="bench")
                batch = []
            batch.append(row)
        apply_rows(replica, held, batch, now_ms=None, source="bench")
        replica.build_indexes()
        return round(len(wires) / (time.process_time() - started))
    finally:
        replica.close()


async def run_benchmark(root: Path, *, skus: int = 100_000, devices: int = 4, changes: int = 20,
                        seed: int | None = None) -> dict:
    rng = random.Random(seed)
    rig = Rig(root, devices, id_suffix=f"-{random.getrandbits(24):06x}")  # mDNS names: unique on the host
    catalog = CentralCatalog(str(rig.central_data / "sku.sqlite"))
    replicas = Replicas(rig)
    try:
        started = time.monotonic()
        await trio.to_thread.run_sync(lambda: catalog.import_rows(_rows(skus)))
        import_s = time.monotonic() - started
        async with _within(180, "the store (cache and devices) to start and connect"):
            await rig.start_all()
            await rig.wait_connected()
        started = time.monotonic()
        # Central signs the imported catalog and the cache pulls it as it goes: either moving is progress.
        await _until_held("the cache to hold the whole catalog",
                          lambda: replicas.count("cache") + replicas.signed(CENTRAL),
                          lambda: replicas.count("cache") >= skus,
                          lambda: f"central signed {replicas.signed(CENTRAL):,}, " + _held(replicas, ["cache"], skus),
                          poll_s=0.25)  # COUNT(*) over the catalog costs CPU the nodes need
        cache_s = time.monotonic() - started
        # Every device started with the store: they are fed as the cache catches up; wait for them too.
        await _until_held("every device to hold the whole catalog",
                          lambda: sum(replicas.count(name) for name in rig.device_names),
                          lambda: all(replicas.count(name) >= skus for name in rig.device_names),
                          lambda: _held(replicas, rig.device_names, skus), poll_s=0.5)
        # A fresh till joins the store that already holds the catalog.
        fresh = rig.add_device()
        spawned = time.monotonic()
        async with _within(180, "the fresh device to start"):
            await rig.start(fresh)
        up = time.monotonic()
        await _until_held("the fresh device to hold the whole catalog", lambda: replicas.count(fresh),
                          lambda: replicas.count(fresh) >= skus, lambda: _held(replicas, [fresh], skus), poll_s=0.1)
        held = time.monotonic()
        delays = []
        for n in range(changes):
            code_index = rng.randrange(skus)
            row = _row(code_index)
            row["price_cents"] = 10_000 + n
            changed_at = time.monotonic()
            await trio.to_thread.run_sync(lambda: catalog.import_rows([row]))
            async with _within(60, f"price change {n + 1} ({row['code']}) to reach every device",
                               lambda: ", ".join(f"{name} shows {replicas.price(name, row['code'])}"
                                                 for name in rig.device_names)):
                while any(replicas.price(name, row["code"]) != row["price_cents"] for name in rig.device_names):
                    await trio.sleep(0.01)
            delays.append(time.monotonic() - changed_at)
        costs = await trio.to_thread.run_sync(signature_costs, root, min(skus, 100_000))
        return {
            "skus": skus, "devices": rig.devices, **costs,
            "central_import_s": round(import_s, 2),
            "cache_full_catalog_s": round(cache_s, 2),
            "fresh_device_full_catalog_s": round(held - up, 2),
            "fresh_device_full_catalog_from_spawn_s": round(held - spawned, 2),
            "fresh_device_vouched_by_snapshot": _storedata(rig, fresh).get("sku_vouched_by_snapshot"),
            "price_change_to_all_devices_p50_s": round(percentile(delays, 50), 3),
            "price_change_to_all_devices_p99_s": round(percentile(delays, 99), 3),
            "price_changes": changes,
        }
    finally:
        replicas.close()
        catalog.close()
        with trio.CancelScope(shield=True):
            await rig.stop_all()


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="posswarm-bench sku", description=__doc__.splitlines()[0])
    p.add_argument("--skus", type=int, default=None, help="catalog size (default 100,000; 1,000 with --stores)")
    p.add_argument("--stores", type=int, default=0,
                   help="time price changes to every till of this many stores instead (tools/sku_stores.py)")
    p.add_argument("--tills-per-store", type=int, default=2, help="with --stores")
    p.add_argument("--processes", type=int, default=None,
                   help="with --stores: store processes to share the stores out over (default one a core)")
    p.add_argument("--devices", type=int, default=4, help="devices running before the fresh one joins")
    p.add_argument("--changes", type=int, default=20, help="price changes to time")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--keep", type=Path, default=None, help="work in this (new) directory and keep logs and files")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="posswarm-bench-sku-") as tmp:
        root = args.keep or Path(tmp)
        try:
            if args.stores:
                from tools.sku_stores import run_stores  # it builds on this module's helpers

                logs.configure("warning", component="bench")  # hundreds of nodes in one process: info lines cost CPU

                result = trio.run(lambda: run_stores(root, stores=args.stores, tills=args.tills_per_store,
                                                     skus=args.skus or 1_000, changes=args.changes, seed=args.seed,
                                                     processes=args.processes))
            else:
                result = trio.run(lambda: run_benchmark(root, skus=args.skus or 100_000, devices=args.devices,
                                                        changes=args.changes, seed=args.seed))
        except PosswarmError as exc:
            print(f"posswarm-bench sku: {exc}", file=sys.stderr)
            return 1
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>40}: {value}")
    return 0 if result else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
