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
    Stage,
    Swarm,
    Verify,
)
from posswarm.lifecycle.events import (
    ChunksChecked,
    Event,
    InstallDone,
    InstallFailed,
    InstallsChanged,
    LayOutFailed,
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
    MAX_BAD_CHUNK_ROUNDS,
    ON_DISK,
    SCRUBBED,
    Facts,
    Installed,
    Record,
    ReleaseState,
)
from posswarm.rollout import INSTALL, ROLL_BACK

S = ReleaseState

#: The states in which each event means something. Anywhere else it changes nothing: a late result, a
#: repeated notice or a report about a release that moved on is not an error, only news that came too late.
APPLIES_IN: dict[type, frozenset[ReleaseState]] = {
    Listed: frozenset({S.LISTED}),
    ManifestArrived: frozenset({S.LISTED}),
    ManifestBad: frozenset({S.LISTED}),
    Unreachable: frozenset({S.LISTED}),
    Resumed: frozenset({S.LISTED}),
    TorrentFinished: frozenset({S.DOWNLOADING, S.FAILED}),
    TorrentFailed: frozenset({S.DOWNLOADING}),
    ChunksChecked: frozenset({S.VERIFYING}),
    ScrubFoundBad: SCRUBBED,
    InstallDone: frozenset({S.INSTALLING, S.REVOKED}),  # revoked while installing: the install is undone
    InstallFailed: frozenset({S.INSTALLING}),
    RolloutChanged: frozenset(ReleaseState) - {S.LISTED, S.REFUSED, S.REVOKED},
    InstallsChanged: ON_DISK,
    LayOutFailed: frozenset({S.DOWNLOADING}),
    RetryDue: frozenset({S.FAILED}),
}


def step(record: Record, event: Event, facts: Facts, now: float) -> tuple[Record, tuple[Effect, ...]]:
    """The record after ``event``, and what the drivers must do about it. Never raises for a late event."""
    if record.state not in APPLIES_IN[type(event)]:
        return record, ()
    return _HANDLERS[type(event)](record, event, facts, now)


def _on_listed(r: Record, e: Listed, f: Facts, now: float):
    return r, (FetchManifest(),)


def _on_manifest(r: Record, e: ManifestArrived, f: Facts, now: float):
    m = e.manifest
    reason = refusal(m, role=f.node.role, store=f.node.store, device_class=f.node.device_class,
                     newest_held=f.newest_carried if f.node.is_cache else f.installed.current,
                     held=set(f.installed.held))
    if reason:
        return replace(r, state=S.REFUSED, manifest=m, reason=reason), (Refuse(reason),)
    return replace(r, state=S.DOWNLOADING, manifest=m, reason=None), (*_stage(r, f), Swarm(), Announce())


def _on_manifest_bad(r: Record, e: ManifestBad, f: Facts, now: float):
    return replace(r, state=S.REFUSED, reason=e.reason), (Refuse(e.reason),)


def _on_unreachable(r: Record, e: Unreachable, f: Facts, now: float):
    return replace(r, reason=e.reason), ()  # still listed: the next poll asks again


def _on_resumed(r: Record, e: Resumed, f: Facts, now: float):
    """An earlier run laid it out: what is on disk says where it stands; libtorrent re-checks the files."""
    r = replace(r, manifest=e.manifest)
    v, disk = r.version, f.installed
    if not f.node.is_cache and (v in (disk.current, disk.previous, disk.pending) or v in disk.held):
        return replace(r, state=_slot_state(v, disk), done_at=now, reason=_held_reason(r, disk)), (Swarm(),)
    return replace(r, state=S.DOWNLOADING), (*_stage(r, f), Swarm())


def _stage(r: Record, f: Facts) -> tuple[Effect, ...]:
    """Stage first (before the torrent starts) where the chunks, once checked, go straight into an install."""
    v, disk, d = r.version, f.installed, f.decision
    if f.node.is_cache or v in disk.held or (d is not None and d.action != INSTALL) or v == disk.current:
        return ()
    return () if disk.current is not None and is_downgrade(v, disk.current) else (Stage(),)


def _on_torrent_finished(r: Record, e: TorrentFinished, f: Facts, now: float):
    if r.state is S.FAILED and not r.retry:
        return r, ()
    return _verify(r)


def _verify(r: Record):
    ticket = r.ticket + 1
    return replace(r, state=S.VERIFYING, ticket=ticket, reason=None, retry=False), (Verify(ticket),)


def _on_torrent_failed(r: Record, e: TorrentFailed, f: Facts, now: float):
    return replace(r, state=S.FAILED, reason=e.reason, retry=True), (Announce(),)


def _on_chunks_checked(r: Record, e: ChunksChecked, f: Facts, now: float):
    if e.ticket != r.ticket:
        return r, ()
    if e.bad:
        return _bad_chunks(r, e.bad, e.first_bad, r.bad_chunk_rounds + 1)
    return _place(r, f, now)


def _on_scrub_found_bad(r: Record, e: ScrubFoundBad, f: Facts, now: float):
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
    # the install first: linking every chunk into the store took 0.4 s of a loaded till (measured), and only a
    # later release needs it
    return replace(r, state=S.INSTALLING, ticket=ticket, reason=None), (Install(ticket), AdoptChunks(), Announce())


def _on_install_done(r: Record, e: InstallDone, f: Facts, now: float):
    if e.ticket != r.ticket:
        return r, ()
    if r.state is S.REVOKED:  # central revoked it while it was being installed: go back at once
        return r, ((RollBack(),) if e.problem is None else ())
    state = S.ROLLED_BACK if e.problem else S.BOOT_PENDING if r.version == f.installed.pending else S.INSTALLED
    return (replace(r, state=state, reason=e.problem, done_at=now, retry=False, bad_chunk_rounds=0),
            (Collect(), Announce()))


def _on_install_failed(r: Record, e: InstallFailed, f: Facts, now: float):
    if e.ticket != r.ticket:
        return r, ()
    return replace(r, state=S.FAILED, reason=e.reason, retry=True), (Announce(),)


def _on_rollout_changed(r: Record, e: RolloutChanged, f: Facts, now: float):
    d = f.decision
    if r.state is S.STAGED and (d is None or d.action == INSTALL):
        return _verify(r)  # nothing holds it any more (its window opened): chunks are checked again before it runs
    if d is None:
        return r, ()
    if d.action == ROLL_BACK:
        if f.node.is_cache:
            effects: tuple[Effect, ...] = (Announce(),)
        else:
            effects = (RollBack() if f.installed.current == r.version else Hold(), Announce())
        return replace(r, state=S.REVOKED, reason=d.reason, retry=False), effects
    return r, ()


def _on_installs_changed(r: Record, e: InstallsChanged, f: Facts, now: float):
    state = _slot_state(r.version, f.installed)
    if f.node.is_cache or state is r.state:
        return r, ()
    return replace(r, state=state, reason=_held_reason(r, f.installed)), (Announce(),)


def _on_lay_out_failed(r: Record, e: LayOutFailed, f: Facts, now: float):
    return replace(r, state=S.FAILED, reason=e.reason, retry=True), (Announce(),)


def _on_retry_due(r: Record, e: RetryDue, f: Facts, now: float):
    if not r.retry:
        return r, ()
    if e.torrent == "finished":
        return _verify(r)
    effects = {"error": (ResumeTorrent(),), "absent": (Swarm(),)}.get(e.torrent, ())
    return replace(r, state=S.DOWNLOADING, reason=None, retry=False), effects


def _slot_state(version: str, disk: Installed) -> ReleaseState:
    if version in disk.held:
        return S.ROLLED_BACK
    if version == disk.current:
        return S.INSTALLED
    if version == disk.pending:
        return S.BOOT_PENDING
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
    LayOutFailed: _on_lay_out_failed,
    RetryDue: _on_retry_due,
}
