"""A whole store on one machine: central tracker and seeder, one cache and N devices as real processes on 127.x.y.z."""

from __future__ import annotations

import os
import random
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import tomli_w
import trio

from posswarm import status
from posswarm.errors import PosswarmError
from posswarm.fsync import write_synced
from posswarm.identity.tls import central_context
from seeder.keys_cli import init_keys

_READY = {
    "tracker": re.compile(rb"event='listening'.*?url='([^']+)'"),
    "seeder": re.compile(rb"event='listening'.*?url='([^']+)'"),
    "node": re.compile(rb"event='node.started'.*?bt_port=(\d+)"),
}


@dataclass(frozen=True)
class LabNode:
    name: str  # what a person reads: "cache", "till-01"; also its log, config and data dir names
    node_id: str  # unique on the network: mDNS names are shared by every lab running on this machine
    role: str
    address: str
    data_dir: Path
    config: Path


def bin_path(name: str) -> str:
    """The console script next to this interpreter (the venv's), so the lab runs the code under test."""
    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.exists() else name


class Lab:
    """Addresses, keys and process handles of one lab; every run picks a random 127.X net and store id."""

    def __init__(self, root: Path, *, devices: int, net: int | None = None, store: str | None = None,
                 announce_interval_s: int = 2, catalog_poll_s: float = 1.0, timestamp_expiry_s: float = 86400.0) -> None:
        if not 1 <= devices <= 200:
            raise PosswarmError(f"--devices {devices}: choose 1..200 devices")
        self.root = root
        self.net = net if net is not None else random.randint(16, 250)
        self.store = store or f"demo-{random.getrandbits(32):08x}"
        self.central_ip = f"127.{self.net}.0.2"
        self.lan_network = f"127.{self.net}.1.0/24"
        self.announce_interval_s = announce_interval_s
        self.catalog_poll_s = catalog_poll_s
        self.timestamp_expiry_s = timestamp_expiry_s  # of central's signed timestamp (the seeder renews it)
        self.logs = root / "logs"
        self.releases = root / "central" / "releases"
        self.keys = root / "central" / "keys"
        for path in (self.logs, self.releases, self.keys):
            path.mkdir(parents=True, exist_ok=True)
        # Central's role keys and root of trust, as `posswarm-seeder keys init` makes them.
        self.central_keys = init_keys(self.keys, self.releases)
        self.private_key, self.root_of_trust = self.central_keys.key("targets"), self.central_keys.root
        # The lab's operator holds a token like any other: central's totals and the tracker's stats are shut without
        # one. The caches' /metrics take a token of their own: a scraper that cannot verify whom it reads (a cache's
        # certificate names a node, not an address) must not carry central's.
        self.operator_token_file = write_operator_token(self.root / "central" / "operator.token")
        self.metrics_token_file = write_operator_token(self.root / "central" / "metrics.token")
        # How a client verifies central's HTTPS: the enrolment authority its certificate is under.
        self.central_tls = central_context(self.central_keys.authority)
        self.tracker_url: str | None = None
        self.seeder_url: str | None = None
        self.pids: dict[str, int] = {}
        self.exited: dict[str, str] = {}  # name -> how a process that had started ended (a node that died)
        self.nodes: list[LabNode] = [self._node("cache", "cache", f"127.{self.net}.1.1")]
        for i in range(devices):
            self.nodes.append(self._node(f"till-{i + 1:02d}", "device", f"127.{self.net}.1.{10 + i}"))

    @property
    def operator_headers(self) -> dict[str, str]:
        """What an operator's client sends to read the tracker's stats or central's totals."""
        return {"authorization": f"Bearer {self.operator_token_file.read_text().strip()}"}

    @property
    def cache(self) -> LabNode:
        return self.nodes[0]

    @property
    def devices(self) -> list[LabNode]:
        return self.nodes[1:]

    def _node(self, name: str, role: str, address: str) -> LabNode:
        data_dir = self.root / "nodes" / name
        return LabNode(name, f"{name}-{self.store.rsplit('-', 1)[-1]}", role, address, data_dir,
                       self.root / "nodes" / f"{name}.toml")

    # ---- processes --------------------------------------------------------------------------

    async def start_central(self, nursery: trio.Nursery, *, seeder_options: tuple[str, ...] = ()) -> None:
        """Tracker first (the seeder announces to it), then the seeder; ``seeder_options`` go to its serve
        (e.g. ``("--web-seed", url)``)."""
        seeder_ip = f"{self.central_ip.rsplit('.', 1)[0]}.3"
        # Central serves HTTPS, as in production; the tracker knows each node by its certificate.
        tls_cert, tls_key = self.central_keys.issue_tls([seeder_ip, self.central_ip])
        # The tracker reads central's revocations from the seeder, which starts after it: its port is chosen now.
        seeder_port = free_port(seeder_ip)
        self.tracker_url = await nursery.start(partial(
            run_process, "tracker",
            [bin_path("posswarm-tracker"), "serve", "--listen", f"{self.central_ip}:0",
             "--interval", str(self.announce_interval_s), "--open",
             "--operator-token-file", str(self.operator_token_file),
             "--tls-cert", str(tls_cert), "--tls-key", str(tls_key), "--node-ca", str(self.central_keys.authority),
             "--root", str(self.root_of_trust), "--catalog", f"https://{seeder_ip}:{seeder_port}/catalog",
             "--catalog-ca", str(self.central_keys.authority), "--catalog-poll", str(max(1, round(self.catalog_poll_s)))],
            self.logs / "tracker.log", pids=self.pids, exited=self.exited,
        ))
        self.seeder_url = await nursery.start(partial(
            run_process, "seeder",
            [bin_path("posswarm-seeder"), "serve", "--releases", str(self.releases),
             "--tls-cert", str(tls_cert), "--tls-key", str(tls_key),
             "--timestamp-key", str(self.central_keys.key("timestamp")),
             "--timestamp-expiry-s", str(self.timestamp_expiry_s),
             "--enrolment-key", str(self.central_keys.key("enrolment")),
             "--operator-token-file", str(self.operator_token_file),
             "--listen", f"{seeder_ip}:{seeder_port}", "--bt-listen", f"{seeder_ip}:0",
             "--tracker", f"{self.tracker_url}/announce", "--tracker-ca", str(self.central_keys.authority),
             *seeder_options],
            self.logs / "seeder.log", pids=self.pids, exited=self.exited,
        ))

    async def start_node(self, nursery: trio.Nursery, node: LabNode, *, extra: dict | None = None) -> None:
        """Start (or restart) a node; ``extra`` adds config sections, e.g. {"install": {"health_check": ...}}."""
        self.write_config(node, extra=extra)
        self.exited.pop(node.name, None)
        await nursery.start(partial(
            run_process, node.name, [bin_path("posswarm"), "node", "--config", str(node.config)],
            self.logs / f"{node.name}.log", kind="node", exited=self.exited,
        ))

    def write_config(self, node: LabNode, *, extra: dict | None = None) -> None:
        doc = {
            "node": {
                "id": node.node_id, "role": node.role, "store": self.store,
                "class": "cache" if node.role == "cache" else "pos",
                "data_dir": str(node.data_dir), "address": node.address, "lan_network": self.lan_network,
            },
            "central": {"root": str(self.root_of_trust), "tracker_url": f"{self.tracker_url}/announce"},
            "timing": {"catalog_poll_s": self.catalog_poll_s, "status_every_s": 0.5},
        }
        if node.role == "cache":
            doc["central"]["catalog_url"] = self.seeder_url
            doc["metrics"] = {"token_file": str(self.metrics_token_file)}
        for section, values in (extra or {}).items():
            doc.setdefault(section, {}).update(values)
        doc["node"]["identity_dir"] = str(self._credential(node, doc["node"]["class"]))
        node.config.parent.mkdir(parents=True, exist_ok=True)
        node.config.write_text(tomli_w.dumps(doc))

    def _credential(self, node: LabNode, device_class: str) -> Path:
        """The node's credential, issued once by central's enrolment key (a restart keeps its identity)."""
        out = self.root / "nodes" / f"{node.name}.identity"
        if not out.exists():
            self.central_keys.enrol(out, node_id=node.node_id, store=self.store, role=node.role,
                                    device_class=device_class)
        return out

    async def publish(self, payload: Path, version: str, *, name: str = "pos-image", options: tuple = ()) -> dict:
        """Publish with the real CLI; returns its summary and when it finished (wall clock)."""
        cmd = [bin_path("posswarm-seeder"), "publish", str(payload), "--name", name, "--version", version,
               "--key", str(self.private_key), "--out", str(self.releases), *options]
        result = await trio.run_process(cmd, capture_stdout=True, capture_stderr=True, check=False)
        if result.returncode != 0:
            raise PosswarmError(f"publish {name} {version} failed: {result.stderr.decode(errors='replace').strip()}")
        return {"name": name, "version": version, "published_at": time.time(),
                "summary": result.stdout.decode(errors="replace").strip()}

    def status_of(self, node: LabNode) -> dict | None:
        try:
            return status.read(node.data_dir / "status.json")
        except PosswarmError:
            return None

    def kill(self, node: LabNode) -> None:
        """SIGKILL a running node (its pid comes from its status.json): a power cut, as far as it can tell."""
        doc = self.status_of(node)
        if doc is None:
            raise PosswarmError(f"{node.name}: no status.json yet, so no pid to kill")
        os.kill(doc["pid"], signal.SIGKILL)
        (node.data_dir / "status.json").unlink()

    def release_of(self, node: LabNode, name: str, version: str) -> dict | None:
        doc = self.status_of(node)
        for r in (doc or {}).get("releases", []):
            if r["name"] == name and r["version"] == version:
                return r
        return None

    def installed(self, node: LabNode, name: str, version: str) -> bool:
        r = self.release_of(node, name, version)
        return r is not None and r["state"] in ("installed", "seeding")

    async def wait_installed(self, name: str, version: str, *, on_tick=None, fail_on_exit: bool = False) -> None:
        """Until every node holds the release (devices installed, cache seeding); callers set the deadline.

        When the deadline cancels the wait, each node's last state goes to stderr (a failing test shows it).
        With ``fail_on_exit`` a process of the lab that died meanwhile ends the wait with a PosswarmError.
        """
        try:
            while True:
                if on_tick:
                    on_tick()
                if fail_on_exit and self.exited:
                    who, how = next(iter(self.exited.items()))
                    raise PosswarmError(f"{who} {how}")
                failed = [(n.name, r["error"]) for n in self.nodes
                          if (r := self.release_of(n, name, version)) and r["state"] == "failed"]
                if failed:
                    raise PosswarmError(f"release {name} {version} failed on {failed[0][0]}: {failed[0][1]}")
                if all(self.installed(n, name, version) for n in self.nodes):
                    return
                await trio.sleep(0.25)  # status.json is rewritten every 0.5 s; this only polls files
        except trio.Cancelled:
            print(f"lab: gave up waiting for {name} {version} in {self.root}: {self.describe(name, version)}",
                  file=sys.stderr)
            raise

    def describe(self, name: str, version: str) -> str:
        """Where each node is with a release, from its status.json: 'till-01=downloading 40.0%, cache=absent'."""
        parts = []
        for n in self.nodes:
            r = self.release_of(n, name, version)
            state = "absent" if r is None else f"{r['state']} {r.get('percent', 0):.1f}%"
            parts.append(f"{n.name}={state}" + (f" ({r['error']})" if r and r.get("error") else ""))
        return ", ".join(parts)


def free_port(host: str) -> int:
    """A TCP port free on ``host`` now; the lab's addresses are its own, so nothing else takes it meanwhile."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def write_operator_token(path: Path) -> Path:
    """A fresh operator token for ``serve --operator-token-file``, readable by its owner only."""
    write_synced(path, secrets.token_urlsafe(32).encode(), mode=0o600)
    return path


def write_image(path: Path, size_mb: int, *, seed: int | None = None) -> Path:
    """A payload of ``size_mb`` MiB of random bytes (incompressible, like a real image's worst case)."""
    rng = random.Random(seed)
    with open(path, "wb") as out:
        for _ in range(size_mb):
            out.write(rng.randbytes(1 << 20) if seed is not None else os.urandom(1 << 20))
    return path


def change_image(src: Path, dst: Path, *, percent: float, regions: int = 3, seed: int = 7) -> int:
    """Copy ``src`` to ``dst`` with ``percent`` % of its bytes rewritten in a few contiguous regions."""
    data = bytearray(src.read_bytes())
    rng = random.Random(seed)
    total = int(len(data) * percent / 100)
    per = max(1, total // regions)
    for i in range(regions):
        start = rng.randrange(i * len(data) // regions, (i + 1) * len(data) // regions - per)
        data[start : start + per] = rng.randbytes(per)
    dst.write_bytes(data)
    return per * regions


async def run_process(name: str, cmd: list[str], log_path: Path, *, kind: str | None = None,
                      pids: dict[str, int] | None = None, exited: dict[str, str] | None = None,
                      task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Run ``cmd`` until cancelled, its stderr copied to ``log_path``; started(value) when its ready line shows.

    A process that ends by itself after it was ready is written into ``exited`` (name -> code and its last
    log lines), so whoever waits on the whole store can say which part died instead of timing out.

    On cancellation the process gets SIGTERM (our services stop cleanly on it) and SIGKILL 5 s later.
    No PR_SET_PDEATHSIG: it fires when the *thread* that forked exits, and trio forks in a worker thread
    that idles out after 10 s (measured: children got SIGTERM ~10 s after they started).
    """
    pattern = _READY[kind or name]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = await trio.lowlevel.open_process(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.PIPE, env=env)
    if pids is not None:
        pids[name] = proc.pid  # for measuring it (CPU, memory) from outside
    ready = False
    try:
        with open(log_path, "ab") as log:
            pending = b""
            async for data in proc.stderr:
                log.write(data)
                log.flush()
                if not ready:
                    pending += data
                    found = pattern.search(pending)
                    if found:
                        ready = True
                        task_status.started(found.group(1).decode())
        code = await proc.wait()
        tail = " | ".join(log_path.read_text(errors="replace").strip().splitlines()[-3:])
        if not ready:
            raise PosswarmError(f"{name} exited with code {code} before it was ready: {tail}")
        if exited is not None:
            exited[name] = f"exited with code {code} after it started: {tail}"
    finally:
        with trio.CancelScope(shield=True):
            if proc.returncode is None:
                proc.terminate()
                with trio.move_on_after(5):
                    await proc.wait()
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()

