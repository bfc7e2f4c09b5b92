"""One store's sales path as real processes on loopback (a seeder, a cache, N tills), for the sales benchmarks
and chaos tests: start, kill and restart each part, and read what each SQLite file holds."""

from __future__ import annotations

import json
import os
import random
import resource
import signal
import sqlite3
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w
import trio

from posswarm.errors import PosswarmError
from posswarm.sales import stored
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
    catalog_poll_s: float = 30.0  # how soon a node follows central's signed state (a rotated root among it)
    fd_limit: int | None = None  # RLIMIT_NOFILE for the node processes (1,024 is most systems' default)
    # Appended to each node id ("cache" -> "cache-x1"): mDNS names are shared by every rig on this machine.
    id_suffix: str = ""
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

    @property
    def central_address(self) -> str:
        return f"127.{self.net}.0.3"

    def pos_address(self, index: int) -> str:
        """Where the POS of the ``index``-th till (0-based) sends from: its own address, so the wire can tell it."""
        return f"127.{self.net}.2.{index + 1}"

    def address(self, name: str) -> str:
        return f"127.{self.net}.1.1" if name == "cache" else f"127.{self.net}.1.{10 + int(name.split('-')[1])}"

    @property
    def device_names(self) -> list[str]:
        return [f"till-{i + 1:02d}" for i in range(self.devices)]

    def node_id(self, name: str) -> str:
        return name + self.id_suffix

    def data_dir(self, name: str) -> Path:
        return self.root / "nodes" / name

    async def start_all(self) -> None:
        await self.start_central()
        await self.start_store()

    async def start_central(self, sales_db: str = "", operator_token_file: Path | None = None) -> str:
        """Central's seeder (sales in DATA_DIR/sales.sqlite, or ``sales_db``; its operator endpoints open to the
        holder of ``operator_token_file``); returns its URL. The store's cache reads ``seeder_url``: point it
        elsewhere (a proxy) before start_store."""
        seeder_ip = self.central_address
        tls_cert, tls_key = self.central_keys.issue_tls([seeder_ip])  # central serves HTTPS, as in production
        self.procs["seeder"] = Proc("seeder", [
            bin_path("posswarm-seeder"), "serve", "--releases", str(self.root / "central" / "releases"),
            "--tls-cert", str(tls_cert), "--tls-key", str(tls_key),
            "--timestamp-key", str(self.central_keys.key("timestamp")), "--listen", f"{seeder_ip}:0",
            "--bt-listen", f"{seeder_ip}:0", "--sku-key", str(self.central_keys.key("sku")),
            "--data-dir", str(self.central_data),
            *(["--sales-db", sales_db] if sales_db else []),
            *(["--operator-token-file", str(operator_token_file)] if operator_token_file else [])],
            self.logs / "seeder.log", "event='listening'")
        await self.start("seeder")
        text = (self.logs / "seeder.log").read_text()
        self.seeder_url = text.split("event='listening'", 1)[1].split("url='", 1)[1].split("'", 1)[0]
        return self.seeder_url

    async def start_store(self) -> None:
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
            "node": {"id": self.node_id(name), "role": role, "store": self.store, "class": "cache" if role == "cache" else "pos",
                     "data_dir": str(self.data_dir(name)), "address": self.address(name),
                     "lan_network": f"127.{self.net}.1.0/24", "log_level": "info"},
            "central": {"root": str(self.central_keys.root)},
            "store": {"gossip_key_file": str(self.key_file), "gossip_port": GOSSIP_PORT, "api_port": 0,
                      "gossip_faults": self.faults},
            "timing": {"status_every_s": 1.0, "catalog_poll_s": self.catalog_poll_s, "sku_poll_s": self.sku_poll_s},
        }
        identity = self.root / "nodes" / f"{name}.identity"
        if not identity.exists():  # issued once: a restarted till keeps its identity
            self.central_keys.enrol(identity, node_id=self.node_id(name), store=self.store, role=role,
                                    device_class=doc["node"]["class"])
        doc["node"]["identity_dir"] = str(identity)
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
        self.starting.add(name)  # started but not yet serving: a kill now is a kill while starting
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
                env=dict(os.environ, PYTHONUNBUFFERED="1"), preexec_fn=self._limit_fds if self.fd_limit else None)
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

    def _limit_fds(self) -> None:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(self.fd_limit, hard), hard))

    async def kill(self, name: str) -> None:
        """SIGKILL: no goodbye, no flush; whatever was committed must survive."""
        process = self.procs[name].process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            await process.wait()

    def running(self, name: str) -> bool:
        """The process exists, serving or still starting."""
        process = self.procs[name].process
        return process is not None and process.poll() is None

    def alive(self, name: str) -> bool:
        """Running and serving (a process still starting up is not counted)."""
        return name not in self.starting and self.running(name)

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
            return bool(doc["storedata"]["gossip"]["peers"][self.node_id("cache")]["alive"])
        except (OSError, ValueError, KeyError, TypeError):
            return False

    async def wait_connected(self, timeout: float = 30.0) -> None:
        with trio.fail_after(timeout):
            while not all(self.sees_cache(name) for name in self.device_names):
                await trio.sleep(0.1)

    def api_url(self, name: str) -> str | None:
        """The till's API as its last start wrote it (stale while it is down: the POS then meets a refusal)."""
        try:
            return (self.data_dir(name) / "api.url").read_text().strip() or None
        except OSError:
            return None

    async def export(self, sales_db: str = "") -> list[dict]:
        """Central's sales as the data platform gets them: the real ``posswarm-seeder sales export`` (JSONL)."""
        out = self.root / "central-export.jsonl"
        where = ["--sales-db", sales_db] if sales_db else ["--data-dir", str(self.central_data)]
        done = await trio.run_process([bin_path("posswarm-seeder"), "sales", "export", *where, "--out", str(out)],
                                      capture_stderr=True, check=False)
        if done.returncode != 0:
            raise PosswarmError(f"sales export from {self.central_data}: {done.stderr.decode(errors='replace').strip()}")
        return [json.loads(line) for line in out.read_text().splitlines()]


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
            sale = stored.unpack(body)
            found[sale.key] = sale.total_cents
    return found


def central_sales(rig: Rig) -> list[tuple]:
    return _read(rig.central_data / "sales.sqlite", "SELECT device_id, incarnation, seq, total_cents FROM sale")


def cache_sales(rig: Rig) -> list[tuple]:
    return _read(rig.data_dir("cache") / "ledger.sqlite",
                 "SELECT device_id, incarnation, seq, total_cents, stored_ms - created_ms FROM sale")


def percentile(values: list[int], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))])
