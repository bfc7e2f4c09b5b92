"""The driver of the release life cycle: carries out what posswarm/lifecycle.py decides, feeds back what happened.

Every decision (take, refuse, install, hold, roll back, retry, what to keep) is lifecycle's; the keeper
owns the I/O around it — laying a release out, the torrent session, BLAKE3 checks, installs, garbage
collection — and turns each result into the next lifecycle event. State changes only in ``_handle``,
called from this process's trio tasks; effects of one event run in order in one task.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import trio

from posswarm import garbage, install, lifecycle, logs
from posswarm.activation import activate_release, installed_of, stage
from posswarm.catalog.client import FetchedRelease
from posswarm.catalog.shelf import Shelf
from posswarm.chunks import ChunkStore, chunk_relpath
from posswarm.config import NodeConfig
from posswarm.datadir import DataDir
from posswarm.errors import PosswarmError
from posswarm.fsync import replace_synced
from posswarm.lifecycle import Effect, Event, Facts, Installed, NodeFacts, Record, ReleaseState
from posswarm.manifest import ChunkRef, Manifest, verify_manifest
from posswarm.release import MANIFEST_NAME, TORRENT_NAME, sizes_match, verify_chunks
from posswarm.release_log import explain as _explain
from posswarm.release_log import log_transition as _log_transition
from posswarm.rollout import Decision
from posswarm.rollout_store import HeldRollouts
from posswarm.slots.device import BootSlots
from posswarm.staging_stream import PayloadStream
from posswarm.store_peers import StorePeers
from posswarm.torrent import session as torrents
from posswarm.torrent.alerts import ChunkCompleted, PieceRead
from posswarm.torrent.session import RESUME_FILE, TorrentSession

log = logs.get("node")
#: States in which a release's payload stream is kept: until it is installed, it may still be.
_STAGING = frozenset({ReleaseState.DOWNLOADING, ReleaseState.VERIFYING, ReleaseState.INSTALLING})


@dataclass
class Carried:
    """What the keeper holds for one release beside its life-cycle record: where it lies and who seeds it."""

    record: Record
    directory: Path | None = None
    reused_bytes: int = 0
    seeds: tuple[tuple[str, int], ...] = ()  # where the catalog said it is seeded
    web_seeds: tuple[str, ...] = ()  # BEP 19 URLs (cache only: a device never leaves the store LAN)
    fetched: FetchedRelease | None = None  # until it is laid out
    bad: list[ChunkRef] = field(default_factory=list)  # chunks the last check found bad, for a refetch
    stream: PayloadStream | None = None  # its payload, written as its chunks complete (lifecycle.Stage)

    @property
    def manifest(self) -> Manifest | None:
        return self.record.manifest


class ReleaseKeeper:
    """Every release this node carries, by "name@version"."""

    def __init__(self, config: NodeConfig, data: DataDir, chunks: ChunkStore, torrents: TorrentSession, shelf: Shelf,
                 public_key, *, rollouts: HeldRollouts, peers: StorePeers, on_change: Callable[[], None],
                 slots: BootSlots | None = None) -> None:
        self.config = config
        self.node = NodeFacts(config.role, config.store, config.device_class)
        self.data = data
        self.chunks = chunks
        self.torrents = torrents
        self.shelf = shelf  # a cache offers its releases to its devices while it still downloads them
        self.releases: dict[str, Carried] = {}
        self._public_key = public_key
        self.rollouts = rollouts  # central's signed rollouts this node holds
        self.peers = peers  # this store's peers, as mDNS reported them
        self.slots = slots  # a till's A/B boot slots, where image releases go (install.slots)
        self._on_change = on_change  # a release changed state: tell the tracker soon
        self._nursery: trio.Nursery | None = None
        self._collecting = trio.Lock()

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Resume what an earlier run laid out, then follow the torrents and scrub; started(self) once resumed."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._torrent_events, self.torrents.subscribe())
            await self._resume()
            nursery.start_soon(self._scrub)
            task_status.started(self)

    # ---- the one place state changes -----------------------------------------------------------------

    def facts(self, record: Record) -> Facts:
        name = record.name
        newest = lifecycle.newest_carried(self.records(), name) if self.node.is_cache else None  # a cache's bar
        return Facts(self.node, self.installed(name), self.decision(name, record.version), newest)

    def decision(self, name: str, version: str) -> Decision | None:
        """What central's signed rollout says this node does about ``name version``; None = follow the manifest."""
        n = self.node
        return self.rollouts.decision(name, version, store=n.store, device_class=n.device_class, role=n.role)

    def installed(self, name: str) -> Installed:
        return Installed() if self.node.is_cache else installed_of(self.data.installed(name), self.slots)

    def _handle(self, key: str, event: Event, *, carry_out: bool = True) -> tuple[Effect, ...]:
        """Step the life cycle; its effects run in a task of their own (``carry_out``) or the caller awaits them."""
        carried = self.releases.get(key)
        if carried is None:
            return ()  # collected meanwhile: news about it is news too late
        before = carried.record
        after, effects = lifecycle.step(before, event, self.facts(before), time.time())
        carried.record = after
        if after.state is not before.state:
            _log_transition(before, after, event)
            if carried.stream is not None and after.state not in _STAGING:
                carried.stream.stop()  # it will not be installed from this staging (failed, held, revoked)
                carried.stream = None
        if carry_out and any(not isinstance(e, lifecycle.FetchManifest) for e in effects):
            self._nursery.start_soon(self._carry_out, key, effects)
        return effects

    async def _carry_out(self, key: str, effects: tuple[Effect, ...]) -> None:
        for effect in effects:
            carried = self.releases.get(key)
            if carried is None:
                return  # collected meanwhile
            if isinstance(effect, lifecycle.FetchManifest):  # the catalog follower's to carry out
                continue
            try:
                await self._EFFECTS[type(effect)](self, carried, effect)
            except (OSError, PosswarmError) as exc:  # a full disk, a vanished file: never the node's end
                reason = _explain(exc)
                log.error("release.step_failed", release=f"{carried.record.name} {carried.record.version}",
                          step=type(effect).__name__, reason=reason)
                if isinstance(effect, (lifecycle.Swarm, lifecycle.Refetch)):
                    self._handle(key, lifecycle.LayOutFailed(reason))  # retried on the next catalog poll
                    return

    # ---- what the node's catalog follower reports ------------------------------------------------------

    def listed(self, name: str, version: str) -> bool:
        """The catalog lists ``name version`` for this node; True when its manifest should be fetched."""
        key = f"{name}@{version}"
        if key not in self.releases:
            self.releases[key] = Carried(lifecycle.listed(name, version, time.time()))
        return any(isinstance(e, lifecycle.FetchManifest) for e in self._handle(key, lifecycle.Listed()))

    def arrived(self, fetched: FetchedRelease, seeds: list[tuple[str, int]], web_seeds: list[str]) -> None:
        """Its manifest and torrent checked out: lifecycle admits it (and it swarms) or refuses it."""
        m = fetched.manifest
        carried = self.releases[f"{m.name}@{m.version}"]
        carried.fetched, carried.seeds, carried.web_seeds = fetched, tuple(seeds), tuple(web_seeds)
        self._handle(carried.record.key, lifecycle.ManifestArrived(m))

    def refused(self, name: str, version: str, reason: str) -> None:
        self._handle(f"{name}@{version}", lifecycle.ManifestBad(reason))

    def unreachable(self, name: str, version: str, reason: str) -> None:
        self._handle(f"{name}@{version}", lifecycle.Unreachable(reason))

    def follow_rollouts(self) -> None:
        """Central's signed rollouts may have changed: every release hears it (revoke, resume a staged one)."""
        for key in list(self.releases):
            self._handle(key, lifecycle.RolloutChanged())

    def follow_installs(self) -> None:
        """``installed/`` may have changed (an operator's rollback, another install): states follow the disk."""
        for key in list(self.releases):
            self._handle(key, lifecycle.InstallsChanged())

    def retry_failed(self) -> None:
        for key, carried in list(self.releases.items()):
            if carried.record.state is ReleaseState.FAILED and carried.record.retry:
                p = self.progress(key)
                if key not in self.torrents.keys():
                    torrent = "absent"
                else:
                    torrent = "error" if p.state == "error" else "finished" if p.is_finished else "running"
                self._handle(key, lifecycle.RetryDue(torrent))

    def refresh_sources(self, catalog, seeds: list[tuple[str, int]]) -> None:
        """Releases still on their way (e.g. resumed after a restart) hear of the catalog's sources again."""
        entries = {(e.name, e.version): e for e in catalog.releases}
        for key, carried in self.releases.items():
            entry = entries.get((carried.record.name, carried.record.version))
            if entry is None or carried.record.ready or key not in self.torrents.keys():
                continue
            for seed in seeds:
                self.torrents.connect_peer(seed, key)
            if self.node.is_cache:
                self.torrents.add_web_seeds(key, catalog.web_seeds_of(entry))

    def progress(self, key: str) -> torrents.Progress:
        """The torrent's numbers; zeros while it is out of the session (being re-added after a bad chunk)."""
        if key in self.torrents.keys():
            return self.torrents.progress(key)
        return torrents.Progress(key, "adding")

    def records(self) -> list[Record]:
        return [c.record for c in self.releases.values()]

    # ---- events from the torrent session and the disk ------------------------------------------------

    async def _resume(self) -> None:
        """Pick up releases laid out by an earlier run; libtorrent re-checks what is on disk."""
        for manifest_path in sorted(self.data.releases.glob(f"*/*/{MANIFEST_NAME}")):
            directory = manifest_path.parent
            try:
                manifest = verify_manifest(manifest_path.read_bytes(), self._public_key)
                (directory / TORRENT_NAME).stat()
            except (PosswarmError, OSError) as exc:
                log.warning("release.skipped", dir=str(directory), reason=str(exc))
                continue
            if not await trio.to_thread.run_sync(sizes_match, manifest, directory):
                # libtorrent 2.1.1 trusts resume data even over a truncated file (measured): check it all
                (directory / RESUME_FILE).unlink(missing_ok=True)
            key = f"{manifest.name}@{manifest.version}"
            self.releases[key] = Carried(lifecycle.listed(manifest.name, manifest.version, time.time()), directory)
            # in the session before the first catalog poll, which hands it the catalog's seeds again
            await self._carry_out(key, self._handle(key, lifecycle.Resumed(manifest), carry_out=False))
            log.info("release.resumed", release=manifest.release_id, state=self.releases[key].record.state.value)

    async def _torrent_events(self, events) -> None:
        async for event in events:
            if event.key not in self.releases:
                continue
            stream = self.releases[event.key].stream
            if isinstance(event, ChunkCompleted):
                if stream is not None and stream.completed(event.name, event.piece):
                    self.torrents.read_piece(event.key, event.piece)
            elif isinstance(event, PieceRead):
                if stream is not None:
                    stream.arrived(event.piece, event.data)
            elif isinstance(event, torrents.TorrentFinished):
                self._handle(event.key, lifecycle.TorrentFinished())
            elif isinstance(event, torrents.TorrentError):
                self._handle(event.key, lifecycle.TorrentFailed(_explain(event.reason)))

    async def _scrub(self) -> None:
        """Re-read every chunk a node serves now and then: libtorrent trusts its disk once a piece passed
        (measured with libtorrent 2.1), and a cache serving silently rotten data is banned by every device."""
        while True:
            await trio.sleep(self.config.scrub_every_s)
            for key, carried in list(self.releases.items()):
                if carried.record.state not in lifecycle.SCRUBBED or (self.slots and self.slots.keeps(carried.manifest)):
                    continue  # a release a boot slot holds has no chunk files: the next version checks what it reads
                bad = await trio.to_thread.run_sync(verify_chunks, carried.manifest, carried.directory)
                if bad and key in self.releases:
                    log.error("scrub.found_corruption", release=carried.manifest.release_id, bad_chunks=len(bad))
                    carried.bad = bad
                    self._handle(key, lifecycle.ScrubFoundBad(len(bad), bad[0].hex))

    # ---- effects -------------------------------------------------------------------------------------

    async def _swarm(self, carried: Carried, effect: lifecycle.Swarm) -> None:
        m = carried.manifest
        key = carried.record.key
        if carried.fetched is None and self.slots is not None and self.slots.keeps(m):
            return  # confirmed in a boot slot: no chunk files kept (BootSlots.trim), the next version reads the slot
        if carried.fetched is not None:  # a new release: lay it out first (again, after a failed try)
            fetched = carried.fetched
            carried.directory = self.data.release(m.name, m.version)
            carried.reused_bytes = await trio.to_thread.run_sync(self._lay_out, fetched, carried.directory)
            if self.slots is not None:  # the running image's unchanged chunks, read out of the booted slot
                carried.reused_bytes += await trio.to_thread.run_sync(self.slots.read_chunks, m, self.records(),
                                                                      carried.directory)
            carried.fetched = None
            torrent_bytes = fetched.torrent_bytes
            log.info("release.fetching", release=m.release_id, size=m.total_size, reused_bytes=carried.reused_bytes,
                     seeds=len(carried.seeds))
        else:
            torrent_bytes = await trio.to_thread.run_sync((carried.directory / TORRENT_NAME).read_bytes)
        if self.node.is_cache:
            self.shelf.put(m, carried.directory)  # devices may start swarming while we download
        await self.torrents.add(key, torrent_bytes, carried.directory,
                                peers=list(carried.seeds) + self.peers.swarm_addresses(), web_seeds=carried.web_seeds)

    def _lay_out(self, fetched: FetchedRelease, directory: Path) -> int:
        directory.mkdir(parents=True, exist_ok=True)
        replace_synced(directory / TORRENT_NAME, fetched.torrent_bytes)
        replace_synced(directory / MANIFEST_NAME, fetched.manifest_bytes)  # last: it means "laid out"
        return self.chunks.link_release(fetched.manifest.unique_chunks(), directory)

    async def _stage(self, carried: Carried, effect: lifecycle.Stage) -> None:
        m = carried.manifest
        carried.directory = self.data.release(m.name, m.version)
        staged = await trio.to_thread.run_sync(stage, m, self.data.installed(m.name), self.slots)
        carried.stream = await self._nursery.start(PayloadStream(staged, carried.directory).run)

    async def _verify(self, carried: Carried, effect: lifecycle.Verify) -> None:
        stream = carried.stream  # the chunks it wrote were checked as they came: it checks the rest
        if (bad := await stream.check_rest() if stream is not None else None) is None:
            if stream is not None:  # its writing failed (a full disk): dropped, the install writes it all
                stream.stop()
                carried.stream = None
            bad = await trio.to_thread.run_sync(verify_chunks, carried.manifest, carried.directory)
        carried.bad = bad
        self._handle(carried.record.key, lifecycle.ChunksChecked(effect.ticket, len(bad), bad[0].hex if bad else ""))

    async def _install(self, carried: Carried, effect: lifecycle.Install) -> None:
        stream, carried.stream = carried.stream, None
        try:
            m = carried.manifest
            staged = await stream.hand_over() if stream is not None else None
            problem = await trio.to_thread.run_sync(activate_release, self.config, m, carried.directory,
                                                    self.data.installed(m.name), self.slots, staged)
        except (PosswarmError, OSError) as exc:
            self._handle(carried.record.key, lifecycle.InstallFailed(effect.ticket, _explain(exc)))
        else:
            self._handle(carried.record.key, lifecycle.InstallDone(effect.ticket, problem))
        self.follow_installs()

    async def _refetch(self, carried: Carried, effect: lifecycle.Refetch) -> None:
        key, directory = carried.record.key, carried.directory
        log.error("release.corrupt_chunks", release=carried.manifest.release_id, bad_chunks=len(carried.bad),
                  round=carried.record.bad_chunk_rounds)
        # out of the session first: libtorrent keeps files open and would go on reading the bad inode
        await self.torrents.remove(key)
        (directory / RESUME_FILE).unlink(missing_ok=True)  # it would vouch for the old files

        def drop_bad() -> bytes:
            for chunk in carried.bad:
                here, stored = directory / chunk_relpath(chunk.digest), self.chunks.path(chunk.digest)
                if stored.exists() and here.exists() and os.path.samefile(here, stored):
                    stored.unlink()  # the same inode went bad on disk: the store's copy is no better
                here.unlink(missing_ok=True)
            return (directory / TORRENT_NAME).read_bytes()

        torrent_bytes = await trio.to_thread.run_sync(drop_bad)
        await self.torrents.add(key, torrent_bytes, directory, peers=list(carried.seeds) + self.peers.swarm_addresses(),
                                web_seeds=carried.web_seeds)

    async def _resume_torrent(self, carried: Carried, effect: lifecycle.ResumeTorrent) -> None:
        self.torrents.resume(carried.record.key)

    async def _roll_back(self, carried: Carried, effect: lifecycle.RollBack) -> None:
        m = carried.manifest
        try:
            rolled_from, rolled_to = await trio.to_thread.run_sync(install.rollback, self.data.installed(m.name))
            log.warning("release.rolled_back", release=m.release_id, to=rolled_to)
        except PosswarmError as exc:
            log.error("release.revoked_but_running", release=m.release_id, reason=str(exc))
        self.follow_installs()

    async def _hold(self, carried: Carried, effect: lifecycle.Hold) -> None:
        m = carried.manifest
        await trio.to_thread.run_sync(install.hold, self.data.installed(m.name), m.version)

    async def _adopt(self, carried: Carried, effect: lifecycle.AdoptChunks) -> None:
        def adopt() -> None:
            for chunk in carried.manifest.unique_chunks():
                self.chunks.adopt(carried.directory / chunk_relpath(chunk.digest), chunk.digest)

        await trio.to_thread.run_sync(adopt)

    async def _collect(self, carried: Carried, effect: lifecycle.Collect) -> None:
        """Keep what lifecycle.versions_to_keep says; drop other release directories and unlinked chunks."""
        async with self._collecting:
            names = {r.name for r in self.records()}
            keep = lifecycle.versions_to_keep(self.records(), self.node, {n: self.installed(n) for n in names})
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

    async def _refuse(self, carried: Carried, effect: lifecycle.Refuse) -> None:
        log.error("release.rejected", release=f"{carried.record.name} {carried.record.version}", reason=effect.reason)

    async def _announce(self, carried: Carried, effect: lifecycle.Announce) -> None:
        self._on_change()

    _EFFECTS = {
        lifecycle.Swarm: _swarm,
        lifecycle.Stage: _stage,
        lifecycle.Verify: _verify,
        lifecycle.Install: _install,
        lifecycle.Refetch: _refetch,
        lifecycle.ResumeTorrent: _resume_torrent,
        lifecycle.RollBack: _roll_back,
        lifecycle.Hold: _hold,
        lifecycle.AdoptChunks: _adopt,
        lifecycle.Collect: _collect,
        lifecycle.Refuse: _refuse,
        lifecycle.Announce: _announce,
    }
