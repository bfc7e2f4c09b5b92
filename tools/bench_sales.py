"""``posswarm-bench sales``: tills record sales under dropped/duplicated/reordered frames, SIGKILLs and a cache outage.

Real processes on loopback (a seeder, a cache and N devices, each ``posswarm node`` on its own
127.X.1.Y with mDNS), real SQLite files; afterwards every committed sale must be at central
exactly once. Prints ``{committed, at_cache, at_central, lost, duplicated, p50_ms, p99_ms, ...}``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import msgpack
import tomli_w
import trio

from posswarm.errors import PosswarmError
from posswarm.sales.model import Sale
from seeder.keys_cli import init_keys
from tools.lab import bin_path

GOSSIP_PORT = 7946
SECRET = "bench-store-secret-" + "0123456789abcdef"


@dataclass
class Proc:
    name: str
    cmd: list[str]
    log: Path
    ready: str
    process: trio.Process | None = None
    starts: int = 0


@dataclass
class Rig:
    """One store on loopback: central seeder, one cache, N devices, each a killable process."""

    root: Path
    devices: int
    faults: str = ""
    sku_poll_s: float = 2.0
    net: int = field(default_factory=lambda: random.randint(16, 250))
    store: str = field(default_factory=lambda: f"bench-{random.getrandbits(32):08x}")

    def __post_init__(self) -> None:
        self.logs = self.root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        keys = self.root / "central" / "keys"
        keys.mkdir(parents=True)
        (self.root / "central" / "releases").mkdir()
        self.central_keys = init_keys(keys, self.root / "central" / "releases")
        self.key_file = self.root / "store.key"
        self.key_file.write_text(SECRET)
        self.central_data = self.root / "central" / "data"
        self.procs: dict[str, Proc] = {}
        self.starting: set[str] = set()  # names whose start() is waiting for them to serve
        self.seeder_url: str | None = None

    def address(self, name: str) -> str:
        return f"127.{self.net}.1.1" if name == "cache" else f"127.{self.net}.1.{10 + int(name.split('-')[1])}"

    @property
    def device_names(self) -> list[str]:
        return [f"till-{i + 1:02d}" for i in range(self.devices)]

    def data_dir(self, name: str) -> Path:
        return self.root / "nodes" / name

    async def start_all(self) -> None:
        seeder_ip = f"127.{self.net}.0.3"
        self.procs["seeder"] = Proc("seeder", [
            bin_path("posswarm-seeder"), "serve", "--releases", str(self.root / "central" / "releases"),
            "--timestamp-key", str(self.central_keys.key("timestamp")), "--listen", f"{seeder_ip}:0", "--bt-listen", f"{seeder_ip}:0",
            "--data-dir", str(self.central_data)], self.logs / "seeder.log", "event='listening'")
        await self.start("seeder")
        text = (self.logs / "seeder.log").read_text()
        self.seeder_url = text.split("event='listening'", 1)[1].split("url='", 1)[1].split("'", 1)[0]
        for name in ["cache", *self.device_names]:
            self._node_proc(name)
        async with trio.open_nursery() as nursery:
            for name in ["cache", *self.device_names]:
                nursery.start_soon(self.start, name)

    def _node_proc(self, name: str) -> None:
        self.procs[name] = Proc(name, [bin_path("posswarm"), "node", "--config", str(self._config(name))],
                                self.logs / f"{name}.log", "event='storedata.started'")

    def add_device(self) -> str:
        """One more (fresh) till; start it with :meth:`start`."""
        self.devices += 1
        name = self.device_names[-1]
        self._node_proc(name)
        return name

    def _config(self, name: str) -> Path:
        role = "cache" if name == "cache" else "device"
        doc = {
            "node": {"id": name, "role": role, "store": self.store, "class": "cache" if role == "cache" else "pos",
                     "data_dir": str(self.data_dir(name)), "address": self.address(name),
                     "lan_network": f"127.{self.net}.1.0/24", "log_level": "info"},
            "central": {"root": str(self.central_keys.root)},
            "store": {"gossip_key_file": str(self.key_file), "gossip_port": GOSSIP_PORT, "api_port": 0,
                      "gossip_faults": self.faults},
            "timing": {"status_every_s": 1.0, "catalog_poll_s": 30.0, "sku_poll_s": self.sku_poll_s},
        }
        if role == "cache":
            doc["central"]["catalog_url"] = self.seeder_url
        else:  # mDNS finds the cache too; the seed makes the run independent of multicast on a busy host
            doc["store"]["gossip_seeds"] = f"{self.address('cache')}:{GOSSIP_PORT}"
        path = self.root / "nodes" / f"{name}.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(tomli_w.dumps(doc))
        return path

    async def start(self, name: str, timeout: float = 60.0) -> None:
        """Start ``name`` and return once its log shows it is serving."""
        self.starting.add(name)  # not a kill victim until it serves: a kill mid-start is not a fault we model
        try:
            await self._start(name, timeout)
        finally:
            self.starting.discard(name)

    async def _start(self, name: str, timeout: float) -> None:
        proc = self.procs[name]
        seen = proc.log.stat().st_size if proc.log.exists() else 0
        with open(proc.log, "ab") as log:
            proc.process = await trio.lowlevel.open_process(
                proc.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                env=dict(os.environ, PYTHONUNBUFFERED="1"))
        proc.starts += 1
        with trio.fail_after(timeout):
            while True:
                with open(proc.log, "rb") as f:
                    f.seek(seen)
                    if proc.ready.encode() in f.read():
                        return
                if proc.process.poll() is not None:
                    tail = proc.log.read_text(errors="replace").strip().splitlines()[-3:]
                    raise PosswarmError(f"{name} exited with {proc.process.returncode}: {' | '.join(tail)}")
                await trio.sleep(0.05)

    async def kill(self, name: str) -> None:
        """SIGKILL: no goodbye, no flush; whatever was committed must survive."""
        process = self.procs[name].process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            await process.wait()

    def alive(self, name: str) -> bool:
        """Running and serving (a process still starting up is not counted)."""
        process = self.procs[name].process
        return name not in self.starting and process is not None and process.poll() is None

    async def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.process is not None and proc.process.poll() is None:
                proc.process.terminate()
        for proc in self.procs.values():
            if proc.process is not None:
                with trio.move_on_after(5):
                    await proc.process.wait()
                if proc.process.poll() is None:
                    proc.process.kill()
                    await proc.process.wait()

    def sees_cache(self, name: str) -> bool:
        """The device's status.json says its gossip channel hears the cache."""
        try:
            doc = json.loads((self.data_dir(name) / "status.json").read_text())
            return bool(doc["storedata"]["gossip"]["peers"]["cache"]["alive"])
        except (OSError, ValueError, KeyError, TypeError):
            return False

    async def wait_connected(self, timeout: float = 30.0) -> None:
        with trio.fail_after(timeout):
            while not all(self.sees_cache(name) for name in self.device_names):
                await trio.sleep(0.1)

    def api_url(self, name: str) -> str | None:
        try:
            return (self.data_dir(name) / "api.url").read_text().strip()
        except OSError:
            return None


def _read(path: Path, query: str) -> list[tuple]:
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return db.execute(query).fetchall()
    finally:
        db.close()


def outbox_sales(rig: Rig) -> dict[tuple, int]:
    """Every sale committed on any till: identity -> cents (the ground truth)."""
    found = {}
    for name in rig.device_names:
        for (body,) in _read(rig.data_dir(name) / "outbox.sqlite", "SELECT body FROM sale"):
            sale = Sale.from_wire(msgpack.unpackb(body))
            found[sale.key] = sale.total_cents
    return found


def central_sales(rig: Rig) -> list[tuple]:
    return _read(rig.central_data / "sales.sqlite", "SELECT device_id, incarnation, seq, total_cents FROM sale")


def cache_sales(rig: Rig) -> list[tuple]:
    return _read(rig.data_dir("cache") / "ledger.sqlite",
                 "SELECT device_id, incarnation, seq, total_cents, stored_ms - created_ms FROM sale")


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


def _percentile(values: list[int], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))])


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
            "p50_ms": _percentile(latencies, 50),
            "p99_ms": _percentile(latencies, 99),
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
    p.add_argument("--keep", type=Path, default=None, help="work in this (new) directory and keep logs and files")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="posswarm-bench-sales-") as tmp:
        root = args.keep or Path(tmp)
        result = trio.run(lambda: run_scenario(
            root, devices=args.devices, sales=args.sales, drop=args.drop, dup=args.dup, reorder=args.reorder,
            kill_every=args.kill_every, cache_outage=args.cache_outage, rate=args.rate, seed=args.seed))
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>20}: {value}")
    ok = result["lost"] == 0 and result["duplicated"] == 0 and result["outbox_cents"] == result["central_cents"]
    if not ok:
        print("posswarm-bench sales: FAILED: sales lost, duplicated or money totals differ", file=sys.stderr)
    return 0 if ok else 1
