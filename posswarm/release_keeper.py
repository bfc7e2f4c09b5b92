"""The releases a node carries, from a verified manifest to seeding or installed.

The keeper lays a release out (reusing chunks the node holds), swarms it, BLAKE3-checks every chunk,
installs it atomically on devices, fetches bad chunks again, scrubs what it serves, retries what failed
for a passing reason (a full disk) and collects garbage. The node (posswarm/node.py) decides what to
take; the keeper carries it from there.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import trio

from posswarm import garbage, health, install, logs
from posswarm.admission import version_key
from posswarm.catalog.client import FetchedRelease
from posswarm.catalog.shelf import Shelf
from posswarm.chunks import ChunkStore, chunk_relpath
from posswarm.config import NodeConfig
from posswarm.datadir import DataDir
from posswarm.errors import PosswarmError
from posswarm.fsync import replace_synced
from posswarm.manifest import Manifest, verify_manifest
from posswarm.release import verify_chunks
from posswarm.rollout import HOLD, INSTALL, ROLL_BACK, Decision
from posswarm.torrent import session as torrents
from posswarm.torrent.session import RESUME_FILE, TorrentSession

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


class ReleaseKeeper:
    """Every release this node carries, by "name@version". State is changed only by this process's trio tasks."""

    def __init__(self, config: NodeConfig, data: DataDir, chunks: ChunkStore, torrents: TorrentSession, shelf: Shelf,
                 public_key, *, decide: Callable[[str, str], Decision | None],
                 store_peers: Callable[[], list[tuple[str, int]]], changed: Callable[[], None]) -> None:
        self.config = config
        self.data = data
        self.chunks = chunks
        self.torrents = torrents
        self.shelf = shelf  # a cache offers its releases to its devices while it still downloads them
        self.releases: dict[str, Release] = {}
        self._public_key = public_key
        self._decide = decide  # what central's signed rollout says for (name, version) here, if anything
        self._store_peers = store_peers  # this store's peers, (address, bt_port)
        self._changed = changed  # a release changed state: tell the tracker soon
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Resume what an earlier run laid out, then follow the torrents and scrub; started(self) once resumed."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._torrent_events, self.torrents.subscribe())
            await self._resume()
            nursery.start_soon(self._scrub)
            task_status.started(self)

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

    async def follow_rollouts(self) -> None:
        """Act on what central's signed rollouts say now: roll back revoked releases, install resumed ones."""
        for release in list(self.releases.values()):
            m = release.manifest
            decision = self._decide(m.name, m.version)
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

    def refresh_sources(self, catalog, seeds: list[tuple[str, int]]) -> None:
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

    async def take(self, fetched: FetchedRelease, seeds: list[tuple[str, int]], web_seeds: list[str]) -> None:
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
        self._changed()

    def progress(self, release: Release) -> torrents.Progress:
        """The torrent's numbers; zeros while it is out of the session (being re-added after a bad chunk)."""
        if release.key in self.torrents.keys():
            return self.torrents.progress(release.key)
        return torrents.Progress(release.key, "adding")

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
        elif (decision := self._decide(m.name, m.version)) is not None and decision.action != INSTALL:
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
        self._changed()

    def _outdated(self, manifest: Manifest) -> bool:
        current = install.current_version(self.data.installed(manifest.name))
        return current is not None and version_key(manifest.version) < version_key(current)

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

    def _adopt_chunks(self, release: Release) -> None:
        for chunk in release.manifest.unique_chunks():
            self.chunks.adopt(release.directory / chunk_relpath(chunk.digest), chunk.digest)

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

    async def retry_failed(self) -> None:
        for release in list(self.releases.values()):
            if release.state != "failed" or not release.retry:
                continue
            log.info("release.retry", release=release.manifest.release_id, after=release.error)
            release.state, release.error = "downloading", None
            p = self.progress(release)
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
