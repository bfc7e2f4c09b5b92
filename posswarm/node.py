"""The composition root of ``posswarm node``: wires torrents, discovery, catalog, announces and installs."""

from __future__ import annotations

import ipaddress
import os
import time
from datetime import datetime
from zoneinfo import ZoneInfo

import httpx
import trio

from posswarm import http_service, install, logs, status, wan_window
from posswarm.admission import refusal, version_key
from posswarm.announce import NodeIdentity, ReleaseReport
from posswarm.announcer import Announcer
from posswarm.catalog.client import fetch_catalog, fetch_release
from posswarm.catalog.http import catalog_app
from posswarm.catalog.model import CatalogEntry
from posswarm.catalog.shelf import Shelf
from posswarm.chunks import ChunkStore
from posswarm.config import NodeConfig
from posswarm.datadir import DataDir
from posswarm.discovery import mdns
from posswarm.discovery.records import Advert
from posswarm.errors import PosswarmError
from posswarm.keys import load_public_key
from posswarm.manifest import Manifest
from posswarm.release_keeper import ReleaseKeeper
from posswarm.rollout import FETCH, INSTALL, Decision
from posswarm.rollout_store import HeldRollouts
from posswarm.storedata.service import StoreData
from posswarm.targeting import targets_device, targets_store
from posswarm.torrent.session import SessionConfig, TorrentSession

log = logs.get("node")


class Node:
    """A cache or a device. State lives here and is changed only by this process's trio tasks."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.data = DataDir(config.data_dir)
        self.chunks = ChunkStore(self.data.chunk_store)
        self.lan = ipaddress.IPv4Network(config.lan_network, strict=False)
        self.keeper: ReleaseKeeper | None = None  # the releases this node carries; set in run()
        self.peers: dict[str, Advert] = {}
        self.shelf = Shelf()
        self.http_url: str | None = None
        self.torrents: TorrentSession | None = None
        self.announcer: Announcer | None = None
        self.storedata: StoreData | None = None  # sales and SKU catalog, when store.gossip_key_file is set
        self.rejected: dict[str, str] = {}  # "name@version" -> why this node refused it
        self._handed_out: set[tuple[str, str, int]] = set()  # (release, ip, port) the tracker gave us
        self.rollouts: HeldRollouts | None = None  # set in run(), once the central key is loaded
        self.wan_caps_kbps = (config.wan_download_kbps, config.wan_upload_kbps)  # (down, up), 0 = none
        self._poll_now = trio.Event()
        self._public_key = None
        self._last_catalog_ok: float | None = None
        self._last_catalog_error: str | None = None

    # ---- life cycle -------------------------------------------------------------------------

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        c = self.config
        self._public_key = load_public_key(c.public_key)
        self.data.create()
        self.rollouts = HeldRollouts(self.data.root / "rollouts", self._public_key)
        await trio.to_thread.run_sync(self.rollouts.load)
        for (name, version), (rollout, data) in self.rollouts.items():
            self.shelf.put_rollout(rollout, data)  # a cache relays them to its devices
        session = TorrentSession(
            SessionConfig(listen_ip=c.address, listen_port=c.bt_port, lan_network=str(self.lan), lan_only=not c.is_cache,
                          download_limit_wan=c.wan_download_kbps * 125, upload_limit_wan=c.wan_upload_kbps * 125)
        )
        async with trio.open_nursery() as nursery:
            self.torrents = await nursery.start(session.run)
            if c.is_cache:
                self.shelf.seeds = (f"{c.address}:{self.torrents.listen_port}",)
                self.http_url = await nursery.start(http_service.run, catalog_app(self.shelf), c.address, c.http_port)
            keeper = ReleaseKeeper(c, self.data, self.chunks, self.torrents, self.shelf, self._public_key,
                                   decide=self._decision, store_peers=self._store_peers, changed=self._kick_tracker)
            self.keeper = await nursery.start(keeper.run)  # resumes what an earlier run laid out
            if c.gossip_key_file:
                self.storedata = await nursery.start(StoreData(c, c.data_dir).run)
            send, receive = trio.open_memory_channel(1000)
            nursery.start_soon(self._discovery_events, receive)
            await nursery.start(mdns.run, self._advert(), send)
            if c.tracker_url:
                self.announcer = Announcer(c.tracker_url, self._identity(), self._reports, self._tracker_peers)
                await nursery.start(self.announcer.run)
            nursery.start_soon(self._poll_catalog)
            nursery.start_soon(self._write_status)
            if c.wan_schedule:
                nursery.start_soon(self._follow_wan_windows)
            log.info("node.started", node=c.node_id, role=c.role, store=c.store, address=c.address,
                     bt_port=self.torrents.listen_port, http=self.http_url or "")
            task_status.started(self)

    def _advert(self) -> Advert:
        c = self.config
        http_port = int(self.http_url.rsplit(":", 1)[1]) if self.http_url else 0
        return Advert(c.node_id, c.store, c.role, c.device_class, c.address, self.torrents.listen_port, http_port,
                      gossip_port=self.storedata.gossip_port if self.storedata else 0)

    def _kick_tracker(self) -> None:
        if self.announcer:
            self.announcer.kick()

    def _identity(self) -> NodeIdentity:
        c = self.config
        return NodeIdentity(c.node_id, c.store, c.role, c.device_class, c.address, self.torrents.listen_port)

    # ---- what to fetch --------------------------------------------------------------------------

    def _catalog_url(self) -> str | None:
        if self.config.is_cache:
            return self.config.catalog_url
        if self.config.cache_url:
            return self.config.cache_url
        caches = [a for a in self.peers.values() if a.role == "cache" and a.http_port]
        return f"http://{caches[0].address}:{caches[0].http_port}" if caches else None

    def _decision(self, name: str, version: str) -> Decision | None:
        c = self.config
        return self.rollouts.decision(name, version, store=c.store, device_class=c.device_class, role=c.role)

    def _meant_for_us(self, e: CatalogEntry) -> bool:
        """The signed rollout decides where there is one; otherwise the catalog's copy of the manifest targets
        (the signed manifest is checked again by admission before anything is downloaded)."""
        decision = self._decision(e.name, e.version)
        if decision is not None:
            return decision.action in (FETCH, INSTALL)
        c = self.config
        return targets_store(e.targets, c.store) if c.is_cache else targets_device(e.targets, c.store, c.device_class)

    def _wanted(self, entries: tuple[CatalogEntry, ...]) -> list[CatalogEntry]:
        """The newest release of each name meant for this node now (older ones stay where they are installed;
        a paused, revoked or not-yet-promoted newer version leaves the next older one in play)."""
        newest: dict[str, CatalogEntry] = {}
        for e in entries:
            if self._meant_for_us(e) and (e.name not in newest
                                          or version_key(e.version) > version_key(newest[e.name].version)):
                newest[e.name] = e
        return [e for e in newest.values() if f"{e.name}@{e.version}" not in self.keeper.releases | self.rejected.keys()]

    async def _poll_catalog(self) -> None:
        async with httpx.AsyncClient(timeout=15.0) as client:
            while True:
                url = self._catalog_url()
                if url:
                    try:
                        catalog = await fetch_catalog(client, url)
                        self._last_catalog_ok, self._last_catalog_error = time.time(), None
                        for rollout in await self.rollouts.refresh(client, url, catalog):
                            self.shelf.put_rollout(rollout, self.rollouts.get(rollout.name, rollout.version)[1])
                        await self.keeper.follow_rollouts()
                        seeds = [s for s in (_endpoint(s) for s in catalog.seeds) if s is not None]
                        self.keeper.refresh_sources(catalog, seeds)
                        for entry in self._wanted(catalog.releases):
                            try:
                                fetched = await fetch_release(client, url, entry, self._public_key)
                                self._admit(fetched.manifest)
                            except PosswarmError as exc:
                                self.rejected[f"{entry.name}@{entry.version}"] = str(exc)
                                log.error("release.rejected", release=entry.release_id, reason=str(exc))
                                continue
                            web = catalog.web_seeds_of(entry) if self.config.is_cache else []
                            await self.keeper.take(fetched, seeds, web)
                    except PosswarmError as exc:
                        if self._last_catalog_error != str(exc):
                            log.warning("catalog.unreachable", reason=str(exc))
                        self._last_catalog_error = str(exc)
                await self.keeper.retry_failed()
                with trio.move_on_after(self.config.catalog_poll_s):
                    await self._poll_now.wait()
                self._poll_now = trio.Event()

    def _admit(self, manifest: Manifest) -> None:
        """PosswarmError unless this node may take the release (signed targets, no downgrade, not held)."""
        c = self.config
        root = self.data.installed(manifest.name)
        if c.is_cache:
            mine = [r.manifest.version for r in self.keeper.releases.values() if r.manifest.name == manifest.name]
            newest = max(mine, key=version_key) if mine else None
        else:
            newest = install.current_version(root)
        reason = refusal(manifest, role=c.role, store=c.store, device_class=c.device_class, newest_held=newest,
                         held=install.held_versions(root))
        if reason:
            raise PosswarmError(reason)

    def _store_peers(self) -> list[tuple[str, int]]:
        return [(a.address, a.bt_port) for a in self.peers.values() if a.store == self.config.store]

    # ---- WAN, peers and the tracker -----------------------------------------------------------------

    async def _follow_wan_windows(self) -> None:
        """Apply the WAN cap of the current store-local time; re-check every 20 s (windows are minutes)."""
        c = self.config
        windows = [wan_window.parse(entry) for entry in c.wan_schedule]
        zone = ZoneInfo(c.timezone)
        applied = None
        while True:
            now = datetime.now(zone)
            caps = (wan_window.cap_at(windows, now, c.wan_download_kbps), wan_window.cap_at(windows, now, c.wan_upload_kbps))
            if caps != applied:
                await self.torrents.set_wan_limits(caps[0] * 125, caps[1] * 125)
                log.info("wan.caps", download_kbps=caps[0], upload_kbps=caps[1], local_time=now.strftime("%a %H:%M"))
                applied = self.wan_caps_kbps = caps
            await trio.sleep(20)

    async def _discovery_events(self, events) -> None:
        async for event in events:
            if isinstance(event, mdns.PeerFound):
                advert = event.advert
                if advert.store != self.config.store or advert.node_id == self.config.node_id:
                    continue
                if ipaddress.IPv4Address(advert.address) not in self.lan:
                    log.warning("peer.outside_lan", node=advert.node_id, address=advert.address)
                    continue
                known = self.peers.get(advert.node_id)
                self.peers[advert.node_id] = advert
                if self.storedata:
                    self.storedata.peer_found(advert)
                if known != advert:
                    log.info("peer.found", node=advert.node_id, role=advert.role, address=advert.address)
                    self.torrents.connect_peer((advert.address, advert.bt_port))
                    if advert.role == "cache":
                        self._poll_now.set()
            elif isinstance(event, mdns.PeerLost):
                if self.storedata:
                    self.storedata.peer_lost(event.node_id)
                if self.peers.pop(event.node_id, None):
                    log.info("peer.lost", node=event.node_id)

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
        for release in self.keeper.releases.values():
            p = self.keeper.progress(release)
            m = release.manifest
            reports.append(
                ReleaseReport(m.name, m.version, m.info_hash_v1, m.total_size, max(0, p.wanted_bytes - p.done_bytes),
                              p.wan_bytes + p.web_bytes, p.lan_bytes, p.upload_bytes,
                              release.state in ("installed", "seeding"),
                              (_rollout_summary(self.rollouts.get(m.name, m.version)) or {}).get("ring", ""))
            )
        return reports

    # ---- status ----------------------------------------------------------------------------------

    def status(self) -> dict:
        c = self.config
        releases = []
        for release in self.keeper.releases.values():
            p = self.keeper.progress(release)
            m = release.manifest
            state = release.state
            if state == "installed" and not c.is_cache:  # "installed" is what runs; the one before is "previous"
                root = self.data.installed(m.name)
                if install.current_version(root) != m.version:
                    state = "previous" if install.previous_version(root) == m.version else "superseded"
            releases.append({
                "name": m.name, "version": m.version, "state": state, "size": m.total_size,
                "done_bytes": p.done_bytes, "wanted_bytes": p.wanted_bytes,
                "percent": round(100.0 * p.done_bytes / p.wanted_bytes, 1) if p.wanted_bytes else 100.0,
                "bytes_from_wan": p.wan_bytes + p.web_bytes, "bytes_from_lan": p.lan_bytes, "bytes_uploaded": p.upload_bytes,
                "reused_bytes": release.reused_bytes, "peers": p.num_peers,
                "rollout": _rollout_summary(self.rollouts.get(m.name, m.version)),
                "learned_at": release.learned_at, "done_at": release.done_at, "error": release.error,
            })
        installed = {}
        for name in {r.manifest.name for r in self.keeper.releases.values()}:
            root = self.data.installed(name)
            installed[name] = {"current": install.current_version(root), "previous": install.previous_version(root)}
        return {
            "node": c.node_id, "role": c.role, "store": c.store, "class": c.device_class, "address": c.address,
            "bt_port": self.torrents.listen_port, "http_url": self.http_url, "pid": os.getpid(),
            "peers": sorted(self.peers), "releases": releases, "installed": installed,
            "rejected": dict(sorted(self.rejected.items())),
            "wan_caps_kbps": {"download": self.wan_caps_kbps[0], "upload": self.wan_caps_kbps[1]},
            "catalog": {"url": self._catalog_url(), "last_ok": self._last_catalog_ok, "error": self._last_catalog_error},
            "tracker": {
                "url": c.tracker_url,
                "last_ok": self.announcer.last_contact if self.announcer else None,
                "last_error": self.announcer.last_error if self.announcer else None,
            },
            "storedata": self.storedata.snapshot if self.storedata else None,
            "updated": time.time(),
        }

    async def _write_status(self) -> None:
        while True:
            await trio.to_thread.run_sync(status.write, self.data.status_file, self.status())
            await trio.sleep(self.config.status_every_s)


def _endpoint(text: str) -> tuple[str, int] | None:
    host, _, port = text.rpartition(":")
    try:
        ipaddress.ip_address(host)
        return host, int(port)
    except ValueError:
        return None


def _rollout_summary(held) -> dict | None:
    if held is None:
        return None
    rollout = held[0]
    return {"sequence": rollout.sequence, "state": rollout.state, "ring": rollout.ring}






async def run_node(config: NodeConfig) -> None:
    """Run until cancelled (SIGINT/SIGTERM end the trio run)."""
    async with trio.open_nursery() as nursery:
        await nursery.start(Node(config).run)
