"""``step``: one release's record and one event in, the new record and the effects out (pure)."""

from __future__ import annotations

from dataclasses import replace

from posswarm.admission import is_downgrade, refusal
from posswarm.lifecycle.effects import (
    AdoptChunks,
    Announce,
    Collect,
    Effect,
    FetchManifest,
    Hold,
    Install,
    Refetch,
    Refuse,
    ResumeTorrent,
    RollBack,
    Swarm,
    Verify,
)
from posswarm.lifecycle.events import (
    ChunksChecked,
    Event,
    InstallDone,
    InstallFailed,
    InstallsChanged,
    Listed,
    ManifestArrived,
    ManifestBad,
    Resumed,
    RetryDue,
    RolloutChanged,
    ScrubFoundBad,
    TorrentFailed,
    TorrentFinished,
    Unreachable,
)
from posswarm.lifecycle.states import (
    _ON_DISK,
    MAX_BAD_CHUNK_ROUNDS,
    SCRUBBED,
    Facts,
    Installed,
    Record,
    ReleaseState,
)
from posswarm.rollout import INSTALL, ROLL_BACK

S = ReleaseState


def step(record: Record, event: Event, facts: Facts, now: float) -> tuple[Record, tuple[Effect, ...]]:
    """The record after ``event``, and what the drivers must do about it. Never raises for a late event."""
    handler = _HANDLERS[type(event)]
    return handler(record, event, facts, now)


def _same(record: Record) -> tuple[Record, tuple[Effect, ...]]:
    return record, ()


def _on_listed(r: Record, e: Listed, f: Facts, now: float):
    if r.state is S.LISTED:
        return r, (FetchManifest(),)
    return _same(r)


def _on_manifest(r: Record, e: ManifestArrived, f: Facts, now: float):
    if r.state is not S.LISTED:
        return _same(r)
    m = e.manifest
    reason = refusal(m, role=f.node.role, store=f.node.store, device_class=f.node.device_class,
                     newest_held=f.newest_carried if f.node.is_cache else f.installed.current,
                     held=set(f.installed.held))
    if reason:
        return replace(r, state=S.REFUSED, manifest=m, reason=reason), (Refuse(reason),)
    return replace(r, state=S.DOWNLOADING, manifest=m, reason=None), (Swarm(), Announce())


def _on_manifest_bad(r: Record, e: ManifestBad, f: Facts, now: float):
    if r.state is not S.LISTED:
        return _same(r)
    return replace(r, state=S.REFUSED, reason=e.reason), (Refuse(e.reason),)


def _on_unreachable(r: Record, e: Unreachable, f: Facts, now: float):
    return (replace(r, reason=e.reason), ()) if r.state is S.LISTED else _same(r)


def _on_resumed(r: Record, e: Resumed, f: Facts, now: float):
    """An earlier run laid it out: what is on disk says where it stands; libtorrent re-checks the files."""
    if r.state is not S.LISTED:
        return _same(r)
    r = replace(r, manifest=e.manifest)
    v, disk = r.version, f.installed
    if not f.node.is_cache and (v in (disk.current, disk.previous) or v in disk.held):
        state = _slot_state(v, disk)
        return replace(r, state=state, done_at=now, reason=_held_reason(r, disk)), (Swarm(),)
    return replace(r, state=S.DOWNLOADING), (Swarm(),)


def _on_torrent_finished(r: Record, e: TorrentFinished, f: Facts, now: float):
    if r.state not in (S.DOWNLOADING, S.FAILED) or (r.state is S.FAILED and not r.retry):
        return _same(r)
    return _verify(r)


def _verify(r: Record):
    ticket = r.ticket + 1
    return replace(r, state=S.VERIFYING, ticket=ticket, reason=None, retry=False), (Verify(ticket),)


def _on_torrent_failed(r: Record, e: TorrentFailed, f: Facts, now: float):
    if r.state is not S.DOWNLOADING:
        return _same(r)
    return replace(r, state=S.FAILED, reason=e.reason, retry=True), (Announce(),)


def _on_chunks_checked(r: Record, e: ChunksChecked, f: Facts, now: float):
    if r.state is not S.VERIFYING or e.ticket != r.ticket:
        return _same(r)
    if e.bad:
        return _bad_chunks(r, e.bad, e.first_bad, r.bad_chunk_rounds + 1)
    return _place(r, f, now)


def _on_scrub_found_bad(r: Record, e: ScrubFoundBad, f: Facts, now: float):
    if r.state not in SCRUBBED:
        return _same(r)
    return _bad_chunks(r, e.bad, e.first_bad, 1)


def _bad_chunks(r: Record, bad: int, first: str, rounds: int):
    """Chunks passed libtorrent's SHA checks but not BLAKE3 (a same-size corrupt file, a collision): fetch
    them again, MAX_BAD_CHUNK_ROUNDS rounds at most."""
    if rounds > MAX_BAD_CHUNK_ROUNDS:
        reason = f"{bad} chunk(s) keep failing BLAKE3 (first {first[:16]}); is a peer or disk bad?"
        return replace(r, state=S.FAILED, reason=reason, retry=False, bad_chunk_rounds=rounds), (Announce(),)
    return replace(r, state=S.DOWNLOADING, bad_chunk_rounds=rounds), (Refetch(), Announce())


def _place(r: Record, f: Facts, now: float):
    """Every chunk verified: seed it (cache), or decide whether it may become what runs (device)."""
    done = (AdoptChunks(), Collect(), Announce())
    if f.node.is_cache:
        return replace(r, state=S.SEEDING, done_at=now, reason=None, bad_chunk_rounds=0), done
    v, disk, d = r.version, f.installed, f.decision
    if v in disk.held:
        return replace(r, state=S.ROLLED_BACK, done_at=now, reason=_held_reason(r, disk)), done
    if d is not None and d.action == ROLL_BACK:
        return replace(r, state=S.REVOKED, done_at=now, reason=d.reason), (AdoptChunks(), Hold(), Announce())
    if d is not None and d.action != INSTALL:
        return replace(r, state=S.STAGED, reason=d.reason), (AdoptChunks(), Announce())
    if v == disk.current or (disk.current is not None and is_downgrade(v, disk.current)):
        # it runs already (re-verified after a scrub), or a newer version runs: never switch back by itself
        return replace(r, state=_slot_state(v, disk), done_at=now, reason=None, bad_chunk_rounds=0), done
    ticket = r.ticket + 1
    return replace(r, state=S.INSTALLING, ticket=ticket, reason=None), (AdoptChunks(), Install(ticket), Announce())


def _on_install_done(r: Record, e: InstallDone, f: Facts, now: float):
    if r.state is not S.INSTALLING or e.ticket != r.ticket:
        return _same(r)
    state = S.INSTALLED if e.problem is None else S.ROLLED_BACK
    return (replace(r, state=state, reason=e.problem, done_at=now, retry=False, bad_chunk_rounds=0),
            (Collect(), Announce()))


def _on_install_failed(r: Record, e: InstallFailed, f: Facts, now: float):
    if r.state is not S.INSTALLING or e.ticket != r.ticket:
        return _same(r)
    return replace(r, state=S.FAILED, reason=e.reason, retry=True), (Announce(),)


def _on_rollout_changed(r: Record, e: RolloutChanged, f: Facts, now: float):
    d = f.decision
    if d is None or r.manifest is None or r.state in (S.REFUSED, S.LISTED):
        return _same(r)
    if d.action == ROLL_BACK and r.state is not S.REVOKED:
        if f.node.is_cache:
            effects: tuple[Effect, ...] = (Announce(),)
        else:
            effects = (RollBack() if f.installed.current == r.version else Hold(), Announce())
        return replace(r, state=S.REVOKED, reason=d.reason, retry=False), effects
    if d.action == INSTALL and r.state is S.STAGED:
        return _verify(r)  # chunks are checked again before they become what runs
    return _same(r)


def _on_installs_changed(r: Record, e: InstallsChanged, f: Facts, now: float):
    if f.node.is_cache or r.state not in _ON_DISK:
        return _same(r)
    state = _slot_state(r.version, f.installed)
    if state is r.state:
        return _same(r)
    return replace(r, state=state, reason=_held_reason(r, f.installed) if state is S.ROLLED_BACK else None), (Announce(),)


def _on_retry_due(r: Record, e: RetryDue, f: Facts, now: float):
    if r.state is not S.FAILED or not r.retry:
        return _same(r)
    if e.torrent == "finished":
        return _verify(r)
    effects = (ResumeTorrent(),) if e.torrent == "error" else ()
    return replace(r, state=S.DOWNLOADING, reason=None, retry=False), effects


def _slot_state(version: str, disk: Installed) -> ReleaseState:
    if version in disk.held:
        return S.ROLLED_BACK
    if version == disk.current:
        return S.INSTALLED
    return S.PREVIOUS if version == disk.previous else S.SUPERSEDED


def _held_reason(r: Record, disk: Installed) -> str | None:
    if r.version not in disk.held:
        return None
    return r.reason or f"release {r.name} {r.version}: held on this node after a rollback (publish a newer version)"


_HANDLERS = {
    Listed: _on_listed,
    ManifestArrived: _on_manifest,
    ManifestBad: _on_manifest_bad,
    Unreachable: _on_unreachable,
    Resumed: _on_resumed,
    TorrentFinished: _on_torrent_finished,
    TorrentFailed: _on_torrent_failed,
    ChunksChecked: _on_chunks_checked,
    ScrubFoundBad: _on_scrub_found_bad,
    InstallDone: _on_install_done,
    InstallFailed: _on_install_failed,
    RolloutChanged: _on_rollout_changed,
    InstallsChanged: _on_installs_changed,
    RetryDue: _on_retry_due,
}
