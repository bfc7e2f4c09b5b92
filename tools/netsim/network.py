"""A built emulated network and the real processes in it: central tracker + seeder, each store's cache and devices."""

from __future__ import annotations

import time
from contextlib import asynccontextmanager
from pathlib import Path

import tomli_w
import trio

from posswarm import status
from posswarm.errors import PosswarmError
from seeder.keys_cli import init_keys
from tools.lab import bin_path, run_process, write_operator_token
from tools.netsim import netns
from tools.netsim.topology import Node, Store, Topology

STARTUP_TIMEOUT_S = 90.0
ANNOUNCE_INTERVAL_S = 2
# The nodes' own defaults: a release reaches caches and tills by push (the long poll on /catalog/changes) and a
# 404 is asked again within 0.1 s, so the poll is only the fallback. At 1 s and a status rewrite every 0.5 s, as
# before the push, an idle till spent 1.3-1.7 % of a core, most of it refreshing central's signed state.
CATALOG_POLL_S = 10.0
STATUS_EVERY_S = 1.0
TRACKER_CATALOG_POLL_S = 1  # the tracker follows central's revocations from the seeder's catalog
# The tracker follows central's revocations from the seeder, which starts after it: a port fixed in advance
# (central's namespace holds these two processes alone; the tracker's own port is the kernel's, from 32768 up).
SEEDER_PORT = 8443


@asynccontextmanager
async def emulated_network(topo: Topology, workdir: Path, *, cross_store: bool = False, wan_cap_kbps: int = 0):
    """Build the namespaces of ``topo``; on the way out (whatever happened) kill what runs there and delete them."""
    netns.check_can_start(topo.prefix)
    try:  # build inside: Ctrl-C while it runs must still remove what it made
        await trio.to_thread.run_sync(netns.build, topo)
        yield Network(topo, workdir, cross_store=cross_store, wan_cap_kbps=wan_cap_kbps)
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(netns.destroy, topo.namespaces())


class Network:
    """Paths, keys and URLs of one emulated network; processes run in nurseries the caller owns."""

    def __init__(self, topo: Topology, workdir: Path, *, cross_store: bool = False, wan_cap_kbps: int = 0) -> None:
        self.topo = topo
        self.workdir = workdir
        self.cross_store = cross_store  # caches may seed each other; central super-seeds (BEP 16)
        self.wan_cap_kbps = wan_cap_kbps  # caches' own WAN cap, set as an all-day WAN window (0 = none)
        self.logs = workdir / "logs"
        self.releases = workdir / "central" / "releases"
        for path in (self.logs, self.releases):
            path.mkdir(parents=True, exist_ok=True)
        self.central_keys = init_keys(workdir / "central" / "keys", self.releases)
        self.private_key, self.root_of_trust = self.central_keys.key("targets"), self.central_keys.root
        self.operator_token_file = write_operator_token(workdir / "central" / "operator.token")
        self.metrics_token_file = write_operator_token(workdir / "central" / "metrics.token")  # the caches' own
        self.tracker_url: str | None = None
        self.seeder_url: str | None = None
        self.store_data = False  # every node runs the store's sales (tills take sales on their local API)
        self.pids: dict[str, int] = {}  # process name -> pid, to measure CPU and memory from outside

    async def start(self, nursery: trio.Nursery, name: str, namespace: str, cmd: list[str], kind: str) -> str:
        """Run ``cmd`` inside ``namespace`` until ``nursery`` is cancelled; returns its ready value (URL, port)."""
        return await nursery.start(self._supervise, name, netns.exec_prefix(namespace) + cmd, kind)

    async def _supervise(self, name: str, cmd: list[str], kind: str, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        # if this process dies, 'posswarm-netsim clean' kills whatever still runs in the namespaces
        await run_process(name, cmd, self.logs / f"{name}.log", kind=kind, pids=self.pids, task_status=task_status)
        # only cancellation may end a process of the scenario: otherwise waits would run to their deadline
        raise PosswarmError(f"{name} exited while the scenario ran (see {self.logs / name}.log)")

    # ---- posswarm ----------------------------------------------------------------------------

    async def start_posswarm(self, nursery: trio.Nursery) -> None:
        """Tracker, seeder, then every store's nodes at once; returns when all are up and devices see their cache."""
        with trio.fail_after(STARTUP_TIMEOUT_S):
            central, ip = self.topo.central, self.topo.central_ip
            # Central serves HTTPS, as in production; the tracker knows each node by its certificate.
            tls_cert, tls_key = self.central_keys.issue_tls([ip])
            authority = str(self.central_keys.authority)
            self.tracker_url = await self.start(nursery, "tracker", central, [
                bin_path("posswarm-tracker"), "serve", "--open", "--listen", f"{ip}:0",
                "--tls-cert", str(tls_cert), "--tls-key", str(tls_key), "--node-ca", authority,
                "--interval", str(ANNOUNCE_INTERVAL_S), "--operator-token-file", str(self.operator_token_file),
                "--root", str(self.root_of_trust), "--catalog", f"https://{ip}:{SEEDER_PORT}/catalog",
                "--catalog-ca", authority, "--catalog-poll", str(TRACKER_CATALOG_POLL_S),
                *(["--cross-store"] if self.cross_store else []),
            ], "tracker")
            self.seeder_url = await self.start(nursery, "seeder", central, [
                bin_path("posswarm-seeder"), "serve", "--releases", str(self.releases),
                "--tls-cert", str(tls_cert), "--tls-key", str(tls_key),
                "--timestamp-key", str(self.central_keys.key("timestamp")), "--listen", f"{ip}:{SEEDER_PORT}",
                "--bt-listen", f"{ip}:0",
                "--operator-token-file", str(self.operator_token_file),
                "--tracker", f"{self.tracker_url}/announce", "--tracker-ca", authority,
                *(["--super-seed"] if self.cross_store else []),
            ], "seeder")
            async with trio.open_nursery() as starting:
                for store in self.topo.stores:
                    for node in store.nodes:
                        starting.start_soon(self._start_node, nursery, store, node)
            await self._wait_discovered()

    async def _start_node(self, nursery: trio.Nursery, store: Store, node: Node) -> None:
        config = self.workdir / "nodes" / f"{node.node_id}.toml"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(tomli_w.dumps(self.node_config(store, node)))
        await self.start(nursery, node.node_id, node.namespace,
                         [bin_path("posswarm"), "node", "--config", str(config)], "node")

    def node_config(self, store: Store, node: Node) -> dict:
        doc = {
            "node": {
                "id": node.node_id, "role": node.role, "store": store.store_id,
                "class": "cache" if node.role == "cache" else "pos", "data_dir": str(self.data_dir(node)),
                "address": node.address, "lan_network": store.lan_network,
            },
            "central": {"root": str(self.root_of_trust), "tracker_url": f"{self.tracker_url}/announce"},
            "timing": {"catalog_poll_s": CATALOG_POLL_S, "status_every_s": STATUS_EVERY_S},
        }
        out = self.workdir / "nodes" / f"{node.node_id}.identity"
        if not out.exists():  # issued once: a restarted node keeps its identity
            self.central_keys.enrol(out, node_id=node.node_id, store=store.store_id, role=node.role,
                                    device_class=doc["node"]["class"])
        doc["node"]["identity_dir"] = str(out)
        if node.role == "cache":
            doc["central"]["catalog_url"] = self.seeder_url
            doc["metrics"] = {"token_file": str(self.metrics_token_file)}
            if self.wan_cap_kbps:
                doc["wan"] = {"schedule": [f"daily 00:00-24:00 {self.wan_cap_kbps}"]}
        if self.store_data:  # the API's port is the kernel's, written to DATA_DIR/api.url
            doc["store"] = {"data": True, "api_port": 0}
            if node.role != "cache":  # the cache is found without waiting on mDNS
                doc["store"]["gossip_seeds"] = f"{store.cache.address}:7946"
        return doc

    def data_dir(self, node: Node) -> Path:
        return self.workdir / "nodes" / node.node_id

    def status_of(self, node: Node) -> dict | None:
        try:
            return status.read(self.data_dir(node) / "status.json")
        except PosswarmError:
            return None

    def release_of(self, node: Node, name: str, version: str) -> dict | None:
        for r in (self.status_of(node) or {}).get("releases", []):
            if r["name"] == name and r["version"] == version:
                return r
        return None

    async def _wait_discovered(self) -> None:
        """Devices are up long before a release in a real store: do not count mDNS start-up as distribution."""
        while True:
            waiting = [d for s in self.topo.stores for d in s.devices
                       if s.cache.node_id not in ((self.status_of(d) or {}).get("peers") or [])]
            if not waiting:
                return
            await trio.sleep(0.2)  # polls files the nodes rewrite every 0.5 s

    async def publish(self, payload: Path, name: str, version: str) -> float:
        """Publish with the real CLI into central's releases; returns the wall-clock time it was done."""
        cmd = [bin_path("posswarm-seeder"), "publish", str(payload), "--name", name, "--version", version,
               "--key", str(self.private_key), "--out", str(self.releases)]
        result = await trio.run_process(cmd, capture_stdout=True, capture_stderr=True, check=False)
        if result.returncode != 0:
            raise PosswarmError(f"publish {name} {version} failed: {result.stderr.decode(errors='replace').strip()}")
        return time.time()

    async def wait_installed(self, name: str, version: str) -> None:
        """Until every device has installed the release and every cache seeds it; callers set the deadline."""
        nodes = [n for s in self.topo.stores for n in s.nodes]
        while True:
            releases = {n.node_id: self.release_of(n, name, version) or {} for n in nodes}
            for node_id, r in releases.items():
                if r.get("state") == "failed":
                    raise PosswarmError(f"release {name} {version} failed on {node_id}: {r.get('error')}")
            if all(r.get("state") in ("installed", "seeding") for r in releases.values()):
                return
            await trio.sleep(0.2)

    # ---- the WAN, as the routers see it ----------------------------------------------------

    def wan_counters(self) -> dict[int, netns.Counters]:
        """Per store index: its router's WAN interface counters (rx = into the store)."""
        return {s.index: netns.counters(s.router, "wan") for s in self.topo.stores}

    def central_counters(self) -> netns.Counters:
        """Central's own link into the internet (tx = what central sent; stores' traffic to each other is not here)."""
        return netns.counters(self.topo.central, "up")
