"""Store data as one node service: the gossip channel, the role's sales/SKU work, and the local API."""

from __future__ import annotations

from pathlib import Path

import trio

from posswarm import http_service, logs
from posswarm.config import NodeConfig
from posswarm.discovery.records import Advert
from posswarm.endpoint import parse_endpoint
from posswarm.errors import PosswarmError
from posswarm.fsync import replace_synced
from posswarm.gossip import faults
from posswarm.gossip.driver import StoreChannel
from posswarm.identity.credential import Credential
from posswarm.identity.tls import central_context
from posswarm.keys import KeyRing
from posswarm.storedata.api import local_app
from posswarm.storedata.cache import CacheData
from posswarm.storedata.device import DeviceData

log = logs.get("storedata")

API_URL_FILE = "api.url"


def parse_seeds(text: str) -> list[tuple[str, int]]:
    """``"10.20.0.1:7946, 10.20.0.2:7946"`` as (host, port) pairs."""
    seeds = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        seeds.append(parse_endpoint(item, what="store.gossip_seeds", example="10.20.0.1:7946"))
    return seeds


def api_url(data_dir: Path) -> str:
    """Where a running node's local API listens (written at start-up), for ``posswarm sale``/``sku``."""
    try:
        return (Path(data_dir) / API_URL_FILE).read_text().strip()
    except OSError:
        raise PosswarmError(f"no local API address in {data_dir}/{API_URL_FILE}; is `posswarm node` running?") from None


class StoreData:
    """The node's store-data service; the node forwards mDNS sightings with :meth:`peer_found`/:meth:`peer_lost`."""

    def __init__(self, config: NodeConfig, data_dir: Path, credential: Credential, *, sku_keys: KeyRing) -> None:
        self.config = config
        self.sku_keys = sku_keys  # the root of trust's SKU keys (CentralTrust.sku_keys, follows rotation)
        self.credential = credential  # its gossip TLS, and the signature on a cache's sales batches to central
        self.data_dir = Path(data_dir)
        c = config
        # Who this node is on the channel comes from its certificate (checked against the config at start).
        self.channel = StoreChannel(credential=credential, address=c.address, port=c.gossip_port,
                                    faults=faults.parse(c.gossip_faults))
        self._seeds = parse_seeds(c.gossip_seeds)
        self.role_data: CacheData | DeviceData | None = None
        self.api_url: str | None = None
        self.snapshot: dict = {}  # refreshed every second for the node's (synchronous) status.json
        self._nursery: trio.Nursery | None = None

    @property
    def gossip_port(self) -> int:
        return self.channel.port

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        c = self.config
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self.channel.run)
            for host, port in self._seeds:
                # A placeholder id (':' is never in a node id); the node's heartbeat answer names it properly.
                self.channel.add_peer(f"seed:{host}:{port}", host, port)
            sku_path = str(self.data_dir / "sku.sqlite")
            if c.is_cache:
                self.role_data = CacheData(
                    self.channel, ledger_path=str(self.data_dir / "ledger.sqlite"), sku_path=sku_path,
                    store=c.store, central_url=c.catalog_url, central_tls=central_context(c.central_ca),
                    timezone=c.timezone, sku_poll_s=c.sku_poll_s, sku_keys=self.sku_keys,
                    credential=self.credential,
                )
            else:
                self.role_data = DeviceData(self.channel, outbox_path=str(self.data_dir / "outbox.sqlite"),
                                            sku_path=sku_path, device_id=c.node_id, sku_keys=self.sku_keys)
            await nursery.start(self.role_data.run)
            # Loopback only: the API takes sales from software on this machine, never from the LAN.
            self.api_url = await nursery.start(http_service.run, local_app(self.role_data), "127.0.0.1", c.api_port)
            await trio.to_thread.run_sync(replace_synced, self.data_dir / API_URL_FILE, self.api_url.encode())
            log.info("storedata.started", gossip_port=self.channel.port, api=self.api_url)
            nursery.start_soon(self._refresh_snapshot)
            task_status.started(self)

    async def _refresh_snapshot(self) -> None:
        while True:
            self.snapshot = await self.status()
            await trio.sleep(1.0)

    def stop(self, reason: str) -> None:
        """End gossip, the sales API and the cache's forwarding to central (this node's certificate was revoked)."""
        self.snapshot = {**self.snapshot, "stopped": reason}
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    def peer_found(self, advert: Advert) -> None:
        if "stopped" in self.snapshot:
            return
        if advert.gossip_port:  # a hint: the handshake says who is there, and its role
            self.channel.add_peer(advert.node_id, advert.address, advert.gossip_port)

    def peer_lost(self, node_id: str) -> None:
        if "stopped" not in self.snapshot:
            self.channel.forget_peer(node_id)

    async def status(self) -> dict:
        doc = await self.role_data.status() if self.role_data else {}
        return {"api": self.api_url, "gossip": self.channel.stats(), **doc}
