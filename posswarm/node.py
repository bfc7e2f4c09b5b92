"""The composition root of ``posswarm node``: wires torrents, discovery, catalog, announces and installs."""

from __future__ import annotations

import errno
import ipaddress
import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import trio

from posswarm import garbage, health, http_service, install, logs, status, wan_window
from posswarm.admission import refusal, version_key
from posswarm.announce import NodeIdentity, ReleaseReport
from posswarm.announcer import Announcer
from posswarm.catalog.client import FetchedRelease, fetch_catalog, fetch_release
from posswarm.catalog.http import catalog_app
from posswarm.catalog.model import CatalogEntry
from posswarm.catalog.shelf import Shelf
from posswarm.chunks import ChunkStore, chunk_relpath
from posswarm.config import NodeConfig
from posswarm.datadir import DataDir
from posswarm.discovery import mdns
from posswarm.discovery.records import Advert
from posswarm.errors import PosswarmError
from posswarm.fsync import replace_synced
from posswarm.keys import load_public_key
from posswarm.manifest import Manifest, verify_manifest
from posswarm.release import verify_chunks
from posswarm.rollout import FETCH, HOLD, INSTALL, ROLL_BACK, Decision
from posswarm.rollout_store import HeldRollouts
from posswarm.storedata.service import StoreData
from posswarm.targeting import targets_device, targets_store
from posswarm.torrent import session as torrents
from posswarm.torrent.session import RESUME_FILE, SessionConfig, TorrentSession

log = logs.get("node")


@dataclass
class Release:
    """One release this node carries, and where it stands."""

    manifest: Manifest
    directory: Path
    state: str = "downloading"  # downloading | verifying | installing | installed | seeding | failed
    learned_at: float = field(default_factory=time.time)
    done_at: float | None = None
    error: str | None = None
    reused_bytes: int = 0
    retry: bool = False  # failed for a reason that may pass (disk full): try again each poll
    seeds: tuple[tuple[str, int], ...] = ()  # where the catalog said it is seeded
    web_seeds: tuple[str, ...] = ()  # BEP 19 URLs (cache only: a device never leaves the store LAN)
    bad_chunk_rounds: int = 0

    @property
    def key(self) -> str:
        return f"{self.manifest.name}@{self.manifest.version}"

    @property
    def ready(self) -> bool:
        return self.state in ("installed", "seeding", "rolled_back", "superseded")


class Node:
    """A cache or a device. State lives here and is changed only by this process's trio tasks."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.data = DataDir(config.data_dir)
        self.chunks = ChunkStore(self.data.chunk_store)
        self.lan = ipaddress.IPv4Network(config.lan_network, strict=False)
        self.releases: dict[str, Release] = {}
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
            self._nursery = nursery
            self.torrents = await nursery.start(session.run)
            nursery.start_soon(self._torrent_events, session.subscribe())
            if c.is_cache:
                self.shelf.seeds = (f"{c.address}:{self.torrents.listen_port}",)
                self.http_url = await nursery.start(http_service.run, catalog_app(self.shelf), c.address, c.http_port)
            await self._resume()
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
            nursery.start_soon(self._scrub)
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
        return [e for e in newest.values() if f"{e.name}@{e.version}" not in self.releases | self.rejected.keys()]

    async def _follow_rollouts(self) -> None:
        """Act on what central's signed rollouts say now: roll back revoked releases, install resumed ones."""
        for release in list(self.releases.values()):
            m = release.manifest
            decision = self._decision(m.name, m.version)
            if decision is None:
                continue
            if decision.action == ROLL_BACK and release.state != "revoked":
                if not self.config.is_cache:
                    await trio.to_thread.run_sync(self._revoke, m)
                release.state, release.error = "revoked", decision.reason  # after the switch: status never runs ahead
                log.warning("release.revoked", release=m.release_id, reason=decision.reason)
            elif decision.action == INSTALL and release.state == "paused":
                release.state, release.error = "verifying", None
                self._nursery.start_soon(self._finish, release)

    def _revoke(self, manifest: Manifest) -> None:
        root = self.data.installed(manifest.name)
        if install.current_version(root) == manifest.version:
            try:
                rolled_from, rolled_to = install.rollback(root)
                log.warning("release.rolled_back", release=manifest.release_id, to=rolled_to)
            except PosswarmError as exc:
                log.error("release.revoked_but_running", release=manifest.release_id, reason=str(exc))
        else:
            install.hold(root, manifest.version)

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
                        await self._follow_rollouts()
                        seeds = [s for s in (_endpoint(s) for s in catalog.seeds) if s is not None]
                        self._refresh_sources(catalog, seeds)
                        for entry in self._wanted(catalog.releases):
                            try:
                                fetched = await fetch_release(client, url, entry, self._public_key)
                                self._admit(fetched.manifest)
                            except PosswarmError as exc:
                                self.rejected[f"{entry.name}@{entry.version}"] = str(exc)
                                log.error("release.rejected", release=entry.release_id, reason=str(exc))
                                continue
                            web = catalog.web_seeds_of(entry) if self.config.is_cache else []
                            await self._take(fetched, seeds, web)
                    except PosswarmError as exc:
                        if self._last_catalog_error != str(exc):
                            log.warning("catalog.unreachable", reason=str(exc))
                        self._last_catalog_error = str(exc)
                await self._retry_failed()
                with trio.move_on_after(self.config.catalog_poll_s):
                    await self._poll_now.wait()
                self._poll_now = trio.Event()

    def _admit(self, manifest: Manifest) -> None:
        """PosswarmError unless this node may take the release (signed targets, no downgrade, not held)."""
        c = self.config
        root = self.data.installed(manifest.name)
        if c.is_cache:
            mine = [r.manifest.version for r in self.releases.values() if r.manifest.name == manifest.name]
            newest = max(mine, key=version_key) if mine else None
        else:
            newest = install.current_version(root)
        reason = refusal(manifest, role=c.role, store=c.store, device_class=c.device_class, newest_held=newest,
                         held=install.held_versions(root))
        if reason:
            raise PosswarmError(reason)

    def _refresh_sources(self, catalog, seeds: list[tuple[str, int]]) -> None:
        """Releases still on their way (e.g. resumed after a restart) hear of the catalog's sources again."""
        entries = {(e.name, e.version): e for e in catalog.releases}
        for release in self.releases.values():
            entry = entries.get((release.manifest.name, release.manifest.version))
            if entry is None or release.ready or release.key not in self.torrents.keys():
                continue
            for seed in seeds:
                self.torrents.connect_peer(seed, release.key)
            if self.config.is_cache:
                self.torrents.add_web_seeds(release.key, catalog.web_seeds_of(entry))

    async def _take(self, fetched: FetchedRelease, seeds: list[tuple[str, int]], web_seeds: list[str]) -> None:
        """Store a verified manifest + torrent, reuse chunks we hold, and start swarming it."""
        m = fetched.manifest
        directory = self.data.release(m.name, m.version)
        reused = await trio.to_thread.run_sync(self._lay_out, fetched, directory)
        release = Release(m, directory, reused_bytes=reused, seeds=tuple(seeds), web_seeds=tuple(web_seeds))
        self.releases[release.key] = release
        log.info("release.fetching", release=m.release_id, size=m.total_size, reused_bytes=reused, seeds=len(seeds))
        await self._swarm(release, fetched.torrent_bytes, seeds)

    def _lay_out(self, fetched: FetchedRelease, directory: Path) -> int:
        directory.mkdir(parents=True, exist_ok=True)
        replace_synced(directory / "release.torrent", fetched.torrent_bytes)
        replace_synced(directory / "manifest.msgpack", fetched.manifest_bytes)  # last: it means "laid out"
        reused = 0
        for chunk in fetched.manifest.unique_chunks():
            if not (directory / chunk_relpath(chunk.digest)).exists() and self.chunks.link_into(chunk.digest, directory):
                reused += chunk.size
        return reused

    async def _swarm(self, release: Release, torrent_bytes: bytes, seeds: list[tuple[str, int]]) -> None:
        peers = list(seeds) + self._store_peers()
        if self.config.is_cache:
            self.shelf.put(release.manifest, release.directory)  # devices may start swarming while we download
        await self.torrents.add(release.key, torrent_bytes, release.directory, peers=peers,
                                web_seeds=release.web_seeds)
        if self.announcer:
            self.announcer.kick()

    def _progress(self, release: Release) -> torrents.Progress:
        """The torrent's numbers; zeros while it is out of the session (being re-added after a bad chunk)."""
        if release.key in self.torrents.keys():
            return self.torrents.progress(release.key)
        return torrents.Progress(release.key, "adding")

    def _store_peers(self) -> list[tuple[str, int]]:
        return [(a.address, a.bt_port) for a in self.peers.values() if a.store == self.config.store]

    async def _resume(self) -> None:
        """Pick up releases laid out by an earlier run; libtorrent re-checks what is on disk."""
        for manifest_path in sorted(self.data.releases.glob("*/*/manifest.msgpack")):
            directory = manifest_path.parent
            try:
                manifest = verify_manifest(manifest_path.read_bytes(), self._public_key)
                torrent_bytes = (directory / "release.torrent").read_bytes()
            except (PosswarmError, OSError) as exc:
                log.warning("release.skipped", dir=str(directory), reason=str(exc))
                continue
            if not await trio.to_thread.run_sync(_sizes_match, manifest, directory):
                # libtorrent 2.1.1 trusts resume data even over a truncated file (measured): check it all
                (directory / RESUME_FILE).unlink(missing_ok=True)
            release = Release(manifest, directory)
            root = self.data.installed(manifest.name)
            if manifest.version in (install.current_version(root), install.previous_version(root)):
                release.state = "installed"  # status tells current from previous; neither is installed again
            elif manifest.version in install.held_versions(root):
                release.state = "rolled_back"
            self.releases[release.key] = release
            await self._swarm(release, torrent_bytes, [])
            log.info("release.resumed", release=manifest.release_id, state=release.state)

    # ---- events --------------------------------------------------------------------------------

    async def _torrent_events(self, events) -> None:
        async for event in events:
            if isinstance(event, torrents.TorrentFinished):
                release = self.releases.get(event.key)
                if release and release.state in ("downloading", "failed"):
                    release.state = "verifying"
                    self._nursery.start_soon(self._finish, release)
            elif isinstance(event, torrents.TorrentError):
                release = self.releases.get(event.key)
                if release and release.state == "downloading":
                    release.state, release.error, release.retry = "failed", _explain(event.reason), True
                    log.error("release.failed", release=release.manifest.release_id, reason=release.error)

    async def _finish(self, release: Release) -> None:
        """Every piece passed libtorrent's SHA checks; now BLAKE3 each chunk, then install (devices)."""
        m = release.manifest
        bad = await trio.to_thread.run_sync(verify_chunks, m, release.directory)
        if bad:
            await self._refetch(release, bad)
            return
        await trio.to_thread.run_sync(self._adopt_chunks, release)
        if self.config.is_cache:
            release.state = "seeding"
        elif m.version in install.held_versions(self.data.installed(m.name)):
            release.state = "rolled_back"
        elif (decision := self._decision(m.name, m.version)) is not None and decision.action != INSTALL:
            release.state = {HOLD: "paused", ROLL_BACK: "revoked"}.get(decision.action, "not for this device")
            release.error = decision.reason
            log.info("release.not_installed", release=m.release_id, reason=decision.reason)
            return
        elif self._outdated(m):  # a newer version runs already: never switch back without a rollback
            previous = install.previous_version(self.data.installed(m.name))
            release.state = "installed" if previous == m.version else "superseded"
        else:
            release.state = "installing"
            try:
                problem = await trio.to_thread.run_sync(self._install, release)
            except (PosswarmError, OSError) as exc:
                release.state, release.error, release.retry = "failed", _explain(exc), True
                log.error("release.install_failed", release=m.release_id, reason=release.error)
                return
            release.state = "rolled_back" if problem else "installed"
            release.error = problem
        release.done_at = time.time()
        release.retry = False
        if release.state != "rolled_back":
            release.error = None
        log.info("release.ready", release=m.release_id, state=release.state,
                 seconds=round(release.done_at - release.learned_at, 3))
        await self._collect_garbage()
        if self.announcer:
            self.announcer.kick()

    def _outdated(self, manifest: Manifest) -> bool:
        current = install.current_version(self.data.installed(manifest.name))
        return current is not None and version_key(manifest.version) < version_key(current)

    async def _refetch(self, release: Release, bad) -> None:
        """Chunks passed libtorrent's SHA checks but not BLAKE3 (a same-size corrupt file on disk, or a
        SHA-1 collision): drop them and let libtorrent fetch them again, three rounds at most."""
        m = release.manifest
        release.bad_chunk_rounds += 1
        log.error("release.corrupt_chunks", release=m.release_id, bad_chunks=len(bad), round=release.bad_chunk_rounds)
        if release.bad_chunk_rounds > 3:
            release.state = "failed"
            release.error = f"{len(bad)} chunk(s) keep failing BLAKE3 (first {bad[0].hex[:16]}); is a peer or disk bad?"
            return
        # out of the session first: libtorrent keeps files open and would go on reading the bad inode
        await self.torrents.remove(release.key)
        (release.directory / RESUME_FILE).unlink(missing_ok=True)  # it would vouch for the old files
        for chunk in bad:
            here = release.directory / chunk_relpath(chunk.digest)
            stored = self.chunks.path(chunk.digest)
            if stored.exists() and here.exists() and os.path.samefile(here, stored):
                stored.unlink()  # the same inode went bad on disk: the store's copy is no better
            here.unlink(missing_ok=True)
        release.state = "downloading"
        torrent_bytes = (release.directory / "release.torrent").read_bytes()
        await self.torrents.add(release.key, torrent_bytes, release.directory,
                                peers=list(release.seeds) + self._store_peers(), web_seeds=release.web_seeds)

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

    async def _scrub(self) -> None:
        """Re-read every chunk a node serves now and then: libtorrent trusts its disk once a piece passed
        (notes/libtorrent.md §9), and a cache serving silently rotten data is banned by every device."""
        while True:
            await trio.sleep(self.config.scrub_every_s)
            for release in list(self.releases.values()):
                if release.state not in ("seeding", "installed"):
                    continue
                bad = await trio.to_thread.run_sync(verify_chunks, release.manifest, release.directory)
                if bad:
                    log.error("scrub.found_corruption", release=release.manifest.release_id, bad_chunks=len(bad))
                    release.bad_chunk_rounds = 0
                    await self._refetch(release, bad)

    async def _retry_failed(self) -> None:
        for release in list(self.releases.values()):
            if release.state != "failed" or not release.retry:
                continue
            log.info("release.retry", release=release.manifest.release_id, after=release.error)
            release.state, release.error = "downloading", None
            p = self._progress(release)
            if p.state == "error":
                self.torrents.resume(release.key)
            elif p.is_finished:
                release.state = "verifying"
                self._nursery.start_soon(self._finish, release)

    async def _collect_garbage(self) -> None:
        """Keep per release name: current and previous (devices) or the two newest (cache); drop the rest."""
        keep: dict[str, set[str]] = {}
        for name in {r.manifest.name for r in self.releases.values()}:
            versions = sorted((r.manifest.version for r in self.releases.values() if r.manifest.name == name),
                              key=version_key)
            if self.config.is_cache:
                keep[name] = set(versions[-2:])
            else:
                root = self.data.installed(name)
                keep[name] = {v for v in (install.current_version(root), install.previous_version(root)) if v}
                keep[name] |= {r.manifest.version for r in self.releases.values()
                               if r.manifest.name == name and not r.ready}  # still on their way
        for name, version in garbage.stale_releases(self.data, keep):
            key = f"{name}@{version}"
            if key in self.releases:
                await self.torrents.remove(key)
                self.shelf.remove(name, version)
                del self.releases[key]
            await trio.to_thread.run_sync(garbage.remove_release, self.data, name, version)
            log.info("release.removed", release=f"{name} {version}")
        chunks, freed = await trio.to_thread.run_sync(garbage.prune_chunks, self.data.chunk_store)
        if chunks:
            log.info("chunks.pruned", chunks=chunks, bytes=freed)

    def _adopt_chunks(self, release: Release) -> None:
        for chunk in release.manifest.unique_chunks():
            self.chunks.adopt(release.directory / chunk_relpath(chunk.digest), chunk.digest)

    def _install(self, release: Release) -> str | None:
        """Assemble, switch ``current``, run the health check; on failure switch back. Returns the failure."""
        m = release.manifest
        root = self.data.installed(m.name)
        path = install.assemble(m, release.directory, root)
        old = install.activate(root, m.version)
        log.info("release.activated", release=m.release_id, previous=old or "")
        problem = None
        for what, command in (("post-install hook", self.config.post_install), ("health check", self.config.health_check)):
            if command and problem is None:
                problem = health.check(command, name=m.name, version=m.version, path=path, kind=m.kind,
                                       timeout_s=self.config.health_timeout_s, what=what)
        if problem is None:
            return None
        if old is None:
            install.hold(root, m.version)
            log.error("release.unhealthy", release=m.release_id, reason=problem, rolled_back_to="")
            return f"{problem}; nothing to roll back to"
        install.rollback(root)
        log.error("release.unhealthy", release=m.release_id, reason=problem, rolled_back_to=old)
        return f"{problem}; rolled back to {old}"

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
        for release in self.releases.values():
            p = self._progress(release)
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
        for release in self.releases.values():
            p = self._progress(release)
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
        for name in {r.manifest.name for r in self.releases.values()}:
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


def _sizes_match(manifest: Manifest, directory: Path) -> bool:
    """Every chunk file is there with its manifest size (a stat each: cheap, unlike hashing)."""
    for chunk in manifest.unique_chunks():
        try:
            if (directory / chunk_relpath(chunk.digest)).stat().st_size != chunk.size:
                return False
        except FileNotFoundError:
            return False
    return True


def _explain(failure: object) -> str:
    """A failure as a person should read it; a full disk says so and that the node retries by itself."""
    text = str(failure)
    if isinstance(failure, OSError) and failure.errno == errno.ENOSPC or "No space left" in text:
        return f"disk full ({text}); free space on the data disk, the node retries by itself"
    return text


async def run_node(config: NodeConfig) -> None:
    """Run until cancelled (SIGINT/SIGTERM end the trio run)."""
    async with trio.open_nursery() as nursery:
        await nursery.start(Node(config).run)
