"""The composition root of ``posswarm node``: builds a cache's or a device's parts and wires them together.

Decisions live elsewhere — what to do with a release in posswarm/lifecycle.py, carried out by
posswarm/release_keeper.py and fed by posswarm/catalog/follower.py; the peers in posswarm/store_peers.py;
sales and SKUs in posswarm/storedata/. This module only starts them in order and connects their ends.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from functools import partial
from pathlib import Path

import trio

from posswarm import http_service, lifecycle, logs, node_metrics, status, web_seed_trust
from posswarm.announce import NodeIdentity, ReleaseReport
from posswarm.announcer import Announcer
from posswarm.catalog.follower import CatalogFollower
from posswarm.catalog.http import catalog_app
from posswarm.catalog.shelf import Shelf
from posswarm.catalog.store_source import cache_client_context, cache_server_context
from posswarm.chunks import ChunkStore
from posswarm.config import NodeConfig, kbps_to_bytes_per_s
from posswarm.datadir import DataDir
from posswarm.discovery import mdns
from posswarm.discovery.records import Advert
from posswarm.identity.credential import Credential, check_matches, load_credential
from posswarm.identity.tls import central_context, tracker_context
from posswarm.install_gate import InstallGate
from posswarm.release_keeper import ReleaseKeeper
from posswarm.rollout_store import HeldRollouts
from posswarm.slots.device import BootSlots
from posswarm.store_peers import StorePeers
from posswarm.storedata.service import StoreData
from posswarm.torrent.session import SessionConfig, TorrentSession
from posswarm.tracker_caches import TrackerCaches
from posswarm.trust.client import CentralTrust
from posswarm.wan_caps import WanCaps

log = logs.get("node")


class Node:
    """A cache or a device; each part owns its own state and is started with ``nursery.start``."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.data = DataDir(config.data_dir)
        self.lan = ipaddress.IPv4Network(config.lan_network, strict=False)
        self.shelf = Shelf()
        self.http_url: str | None = None
        self.torrents: TorrentSession | None = None
        self.keeper: ReleaseKeeper | None = None
        self.follower: CatalogFollower | None = None
        self.peers: StorePeers | None = None
        self.wan: WanCaps | None = None
        self.announcer: Announcer | None = None
        self.storedata: StoreData | None = None  # sales and SKU catalog, when store.data is on
        self.rollouts: HeldRollouts | None = None
        self.trust: CentralTrust | None = None
        self.credential: Credential | None = None
        self.revoked: str | None = None  # why central revoked this node's own certificate, once it has
        self.tracker_caches: TrackerCaches | None = None
        self.slots: BootSlots | None = None  # install.slots: where OS images go
        self._handed_out: set[tuple[str, str, int]] = set()  # (release, ip, port) the tracker gave us, logged once

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        c = self.config
        self.data.create()
        # The root of trust (TUF, posswarm/trust): its release keys check manifests and rollouts.
        self.trust = CentralTrust(c.root, self.data.root / "tuf", grace_s=c.expiry_grace_s)
        await trio.to_thread.run_sync(self.trust.load)
        if c.identity_dir:  # who this node is, as central certified it; refused before anything starts
            self.credential = await trio.to_thread.run_sync(self._load_credential)
        central_tls = central_context(c.central_ca) if c.catalog_url else True
        if c.catalog_url:
            self.trust.verify = central_tls
            # libtorrent checks HTTPS web seeds and trackers against OpenSSL's default store; point it at
            # central's CA, and at a CDN's CAs where central.web_seed_ca names them.
            bundle = await trio.to_thread.run_sync(
                web_seed_trust.write_bundle, c.central_ca, Path(c.web_seed_ca) if c.web_seed_ca else None, self.data.root)
            os.environ["SSL_CERT_FILE"] = str(bundle)
        public_key = self.trust.keyring
        self.rollouts = HeldRollouts(self.data.root / "rollouts", public_key)
        await trio.to_thread.run_sync(self.rollouts.load)
        for _, (rollout, data) in self.rollouts.items():
            self.shelf.put_rollout(rollout, data)  # a cache relays them to its devices
        if c.is_cache:  # and central's metadata it verified before, until a fresh one arrives
            self.shelf.tuf = await trio.to_thread.run_sync(self.trust.relay_files)
        session = TorrentSession(SessionConfig(
            listen_ip=c.address, listen_port=c.bt_port, lan_network=str(self.lan), lan_only=not c.is_cache,
            download_limit_wan=kbps_to_bytes_per_s(c.wan_download_kbps), upload_limit_wan=kbps_to_bytes_per_s(c.wan_upload_kbps)))
        async with trio.open_nursery() as nursery:
            self.torrents = await nursery.start(session.run)
            self.wan = WanCaps(c, self.torrents)
            if c.is_cache:
                self.shelf.seeds = (f"{c.address}:{self.torrents.listen_port}",)
                # The store catalog over TLS with the cache's node certificate: a device takes only a certified cache.
                tls = cache_server_context(self.credential) if self.credential else None
                # Scraped from the start; its parts (keeper, follower) come a moment later.
                metrics = node_metrics.route(lambda: self.status() if self.follower else None,
                                             node_metrics.gate(c.metrics_token_file))
                app = catalog_app(self.shelf, extra_routes=[metrics])
                # Its devices' trust refreshes keep their TLS connection 60 s (posswarm/trust/client.py).
                self.http_url = await nursery.start(partial(http_service.run, app, c.address, c.http_port,
                                                            ssl_context=tls, keep_alive_s=75.0))
            if c.store_data:
                self.storedata = await nursery.start(StoreData(c, c.data_dir, self.credential,
                                                               sku_keys=self.trust.sku_keys).run)
            self.peers = StorePeers(c.node_id, c.store, self.lan, connect=self.torrents.connect_peer,
                                    storedata=self.storedata, on_cache=self._cache_found,
                                    catalog_scheme="https" if self.credential else "http")
            verify = central_tls  # a cache's: central's CA and host name
            if self.credential and not c.is_cache:
                verify = self.trust.verify = cache_client_context(self.credential)
            if c.slots:  # a till with A/B boot slots: confirm or give up a trial boot before anything else
                self.slots = BootSlots(c, self.data)
                await trio.to_thread.run_sync(self.slots.start)
            gate = None if c.is_cache else InstallGate(self.rollouts, c)  # activate only when install.window allows
            keeper = ReleaseKeeper(c, self.data, ChunkStore(self.data.chunk_store), self.torrents, self.shelf,
                                   public_key, rollouts=gate or self.rollouts, peers=self.peers,
                                   on_change=self._kick_tracker, slots=self.slots)
            self.keeper = await nursery.start(keeper.run)  # resumes what an earlier run laid out
            if gate:
                nursery.start_soon(gate.run, self.keeper)
            self.follower = await nursery.start(CatalogFollower(
                self.keeper, self.rollouts, self.shelf, self.trust, sources=self._catalog_sources,
                poll_s=c.catalog_poll_s, verify=verify).run)
            send, receive = trio.open_memory_channel(1000)
            nursery.start_soon(self.peers.run, receive)
            if c.mdns:
                await nursery.start(mdns.run, self._advert(), send)
            if c.tracker_url:  # https:// only (posswarm/config.py): the tracker places us by our certificate
                to_tracker = tracker_context(self.credential, c.central_ca)
                self.announcer = Announcer(c.tracker_url, self._identity(), self._reports, self._tracker_peers,
                                           verify=to_tracker)
                await nursery.start(self.announcer.run)
                if not c.is_cache:  # where no cache is heard of (multicast blocked), the tracker knows them
                    self.tracker_caches = await nursery.start(TrackerCaches(
                        c.tracker_url, self._identity, needed=self._no_cache_known, on_found=self._cache_found,
                        poll_s=c.catalog_poll_s, verify=to_tracker).run)
            nursery.start_soon(self._write_status)
            if self.credential:
                nursery.start_soon(self._watch_own_certificate)
            if c.wan_schedule:
                nursery.start_soon(self.wan.run)
            log.info("node.started", node=c.node_id, role=c.role, store=c.store, address=c.address,
                     bt_port=self.torrents.listen_port, http=self.http_url or "")
            task_status.started(self)

    def _load_credential(self) -> Credential:
        c = self.config
        credential = load_credential(Path(c.identity_dir), self.trust.enrolment_keys,
                                     now=datetime.datetime.now(datetime.UTC), revoked=self.trust.revoked)
        check_matches(credential.identity, node_id=c.node_id, store=c.store, role=c.role)
        return credential

    async def _watch_own_certificate(self) -> None:
        """Once central's verified state revokes this node, it stops speaking for the store: its gossip and its
        sales to central end (store peers and central refuse it anyway); it says so once in the log and in status."""
        while (why := self.trust.revoked.is_revoked(self.credential.identity)) is None:
            await trio.sleep(1.0)
        self.revoked = why
        log.error("node.revoked", reason=f"{why}; this node no longer speaks for store {self.config.store}")
        if self.storedata:
            self.storedata.stop(why)

    # ---- the wires between the parts -----------------------------------------------------------------

    @property
    def _catalog_port(self) -> int:
        """The port of a cache's store catalog (0 for a device): in its mDNS advert and its announces."""
        return int(self.http_url.rsplit(":", 1)[1]) if self.http_url else 0

    def _advert(self) -> Advert:
        c = self.config
        return Advert(c.node_id, c.store, c.role, c.device_class, c.address, self.torrents.listen_port,
                      self._catalog_port, gossip_port=self.storedata.gossip_port if self.storedata else 0)

    def _identity(self) -> NodeIdentity:
        c = self.config
        # The class the certificate names: the tracker keeps the certificate's whatever the announce says.
        device_class = self.credential.identity.device_class if self.credential else c.device_class
        return NodeIdentity(c.node_id, c.store, c.role, device_class, c.address, self.torrents.listen_port,
                            self._catalog_port)

    def _catalog_sources(self) -> list[str]:
        """A cache reads central; a device its configured cache, else every cache of the store it heard of
        (by mDNS, then from the tracker)."""
        c = self.config
        if c.is_cache:
            return [c.catalog_url]
        handed = [self.peers.catalog_url(ip, port) for ip, port in self.tracker_caches.caches] if self.tracker_caches else []
        heard = self.peers.catalog_urls()
        return ([c.cache_url] if c.cache_url else []) + heard + [u for u in handed if u not in heard]

    def _no_cache_known(self) -> bool:
        return not self.config.cache_url and not self.peers.catalog_urls()

    def _cache_found(self) -> None:
        if self.follower:
            self.follower.poll_now()

    def _kick_tracker(self) -> None:
        if self.announcer:
            self.announcer.kick()

    def rollout_summary(self, name: str, version: str) -> dict | None:
        held = self.rollouts.get(name, version)
        if held is None:
            return None
        return {"sequence": held[0].sequence, "state": held[0].state, "ring": held[0].ring}

    def _tracker_peers(self, report: ReleaseReport, peers) -> None:
        key = f"{report.name}@{report.version}"
        for ip, port in peers:
            if not self.config.is_cache and ipaddress.ip_address(ip) not in self.lan:
                continue  # a device never talks to anything outside its store (the ip filter agrees)
            if (key, ip, port) not in self._handed_out:
                self._handed_out.add((key, ip, port))
                log.info("peer.from_tracker", release=key, peer=f"{ip}:{port}")
            self.torrents.connect_peer((ip, port), key)

    def _reports(self) -> list[ReleaseReport]:
        reports = []
        central_expires = int(self.trust.state.expires) if self.trust.state is not None else 0
        slots = self.slots.status() if self.slots else None
        boot = (slots["booted"], slots["boot"], slots["reason"] or "") if slots else None
        for key, carried in self.keeper.releases.items():
            m = carried.manifest
            if m is None:
                continue
            p = self.keeper.progress(key)
            ring = (self.rollout_summary(m.name, m.version) or {}).get("ring", "")
            reports.append(ReleaseReport(
                m.name, m.version, m.info_hash_v1, m.stored_size, max(0, p.wanted_bytes - p.done_bytes),  # bytes on the wire
                p.wan_bytes + p.web_bytes, p.lan_bytes, p.upload_bytes,
                carried.record.state in lifecycle.ANNOUNCED_INSTALLED, ring, central_expires,
                str(carried.record.state), boot))
        return reports

    def status(self) -> dict:
        return status.node_document(self)

    async def _write_status(self) -> None:
        while True:
            try:
                await trio.to_thread.run_sync(status.write, self.data.status_file, self.status())
            except OSError as exc:  # a full disk must not take the node (and its sales API) down
                log.error("status.unwritten", file=str(self.data.status_file),
                          reason=f"{exc.strerror}; free space on the data disk, the node retries by itself")
            await trio.sleep(self.config.status_every_s)
