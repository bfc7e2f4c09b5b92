"""The release life cycle as a pure state machine: every transition from a table, and properties over any event order."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from posswarm import lifecycle as lc
from posswarm.admission import version_key
from posswarm.manifest import Manifest, Targets
from posswarm.rollout import FETCH, HOLD, INSTALL, NOT_FOR_YOU, ROLL_BACK, WAIT, Decision

S = lc.ReleaseState
DEVICE = lc.NodeFacts("device", "S042", "pos")
CACHE = lc.NodeFacts("cache", "S042", "cache")
NOW = 1_000.0


def manifest(version="2.0", stores=("S0*",), classes=("pos",)) -> Manifest:
    return Manifest(name="pos-os", version=version, kind="image", files=(), total_size=0, payload_blake3=bytes(32),
                    info_hash_v1=bytes(20), info_hash_v2=bytes(32), piece_size=262144,
                    targets=Targets(stores, classes, "all"), created=0, key_id="k")


def record(state=S.LISTED, version="2.0", **changes) -> lc.Record:
    m = None if state in (S.LISTED,) else manifest(version)
    return replace(lc.Record("pos-os", version, state, manifest=m, learned_at=NOW - 5), **changes)


def facts(node=DEVICE, current=None, previous=None, held=(), decision=None, newest=None, pending=None) -> lc.Facts:
    return lc.Facts(node, lc.Installed(current, previous, frozenset(held), pending), decision, newest)


def kinds(effects) -> list[str]:
    return [type(e).__name__ for e in effects]


INSTALL_NOW = Decision(INSTALL, "ring all reaches pos devices")
PAUSED = Decision(HOLD, "paused at ring canary")
REVOKED = Decision(ROLL_BACK, "revoked by central")
NOT_YET = Decision(NOT_FOR_YOU, "ring canary has not reached store S042 yet")

# (name, record before, event, facts, state after, effects, words the reason must hold)
TRANSITIONS = [
    ("listed: fetch its manifest", record(), lc.Listed(), facts(), S.LISTED, ["FetchManifest"], None),
    ("a verified manifest for us stages and swarms", record(), lc.ManifestArrived(manifest()), facts(), S.DOWNLOADING,
     ["Stage", "Swarm", "Announce"], None),
    ("held by its rollout: swarms, nothing staged", record(), lc.ManifestArrived(manifest()),
     facts(decision=PAUSED), S.DOWNLOADING, ["Swarm", "Announce"], None),
    ("a cache swarms, never stages", record(), lc.ManifestArrived(manifest(classes=("*",))), facts(CACHE),
     S.DOWNLOADING, ["Swarm", "Announce"], None),
    ("signed for other stores: refused", record(), lc.ManifestArrived(manifest(stores=("S1*",))), facts(),
     S.REFUSED, ["Refuse"], "not pos of store S042"),
    ("a downgrade is refused", record(version="1.0"), lc.ManifestArrived(manifest("1.0")), facts(current="2.0"),
     S.REFUSED, ["Refuse"], "older than 2.0"),
    ("a cache refuses older than it carries", record(version="1.0"), lc.ManifestArrived(manifest("1.0", classes=("*",))),
     facts(CACHE, newest="2.0"), S.REFUSED, ["Refuse"], "older than 2.0"),
    ("a held version is refused", record(), lc.ManifestArrived(manifest()), facts(held={"2.0"}), S.REFUSED,
     ["Refuse"], "held on this node"),
    ("a bad signature is a verdict", record(), lc.ManifestBad("release pos-os 2.0: signature does not match"), facts(),
     S.REFUSED, ["Refuse"], "signature"),
    ("a network failure is not", record(), lc.Unreachable("timed out"), facts(), S.LISTED, [], "timed out"),
    ("resumed, running: installed", record(), lc.Resumed(manifest()), facts(current="2.0"), S.INSTALLED, ["Swarm"], None),
    ("resumed, kept for rollback: previous", record(), lc.Resumed(manifest()), facts(current="3.0", previous="2.0"),
     S.PREVIOUS, ["Swarm"], None),
    ("resumed, held: rolled back", record(), lc.Resumed(manifest()), facts(current="1.0", previous="2.0", held={"2.0"}),
     S.ROLLED_BACK, ["Swarm"], "held"),
    ("resumed half-way: staged again from the start", record(), lc.Resumed(manifest()), facts(current="1.0"),
     S.DOWNLOADING, ["Stage", "Swarm"], None),
    ("resumed on a cache: libtorrent re-checks", record(), lc.Resumed(manifest()), facts(CACHE), S.DOWNLOADING,
     ["Swarm"], None),
    ("every piece in: verify", record(S.DOWNLOADING), lc.TorrentFinished(), facts(), S.VERIFYING, ["Verify"], None),
    ("torrent error: failed, retried", record(S.DOWNLOADING), lc.TorrentFailed("disk full"), facts(), S.FAILED,
     ["Announce"], "disk full"),
    ("chunks good: install", record(S.VERIFYING, ticket=1), lc.ChunksChecked(1), facts(current="1.0"), S.INSTALLING,
     ["Install", "AdoptChunks", "Announce"], None),
    ("chunks good on a cache: seed", record(S.VERIFYING, ticket=1), lc.ChunksChecked(1), facts(CACHE), S.SEEDING,
     ["AdoptChunks", "Collect", "Announce"], None),
    ("chunks good, rollout paused: staged", record(S.VERIFYING, ticket=1), lc.ChunksChecked(1),
     facts(decision=PAUSED), S.STAGED, ["AdoptChunks", "Announce"], "paused"),
    ("chunks good, ring not here yet: staged", record(S.VERIFYING, ticket=1), lc.ChunksChecked(1),
     facts(decision=NOT_YET), S.STAGED, ["AdoptChunks", "Announce"], "not reached"),
    ("chunks good, revoked: held", record(S.VERIFYING, ticket=1), lc.ChunksChecked(1), facts(decision=REVOKED),
     S.REVOKED, ["AdoptChunks", "Hold", "Announce"], "revoked"),
    ("chunks good, held: rolled back", record(S.VERIFYING, ticket=1), lc.ChunksChecked(1), facts(held={"2.0"}),
     S.ROLLED_BACK, ["AdoptChunks", "Collect", "Announce"], "held"),
    ("chunks good, newer runs: superseded", record(S.VERIFYING, ticket=1), lc.ChunksChecked(1), facts(current="3.0"),
     S.SUPERSEDED, ["AdoptChunks", "Collect", "Announce"], None),
    ("re-verified while running: installed", record(S.VERIFYING, ticket=1), lc.ChunksChecked(1), facts(current="2.0"),
     S.INSTALLED, ["AdoptChunks", "Collect", "Announce"], None),
    ("stale check result: ignored", record(S.VERIFYING, ticket=2), lc.ChunksChecked(1), facts(), S.VERIFYING, [], None),
    ("bad chunks: fetch them again", record(S.VERIFYING, ticket=1), lc.ChunksChecked(1, 2, "ab" * 32), facts(),
     S.DOWNLOADING, ["Refetch", "Announce"], None),
    ("bad chunks a fourth time: failed for good", record(S.VERIFYING, ticket=1, bad_chunk_rounds=3),
     lc.ChunksChecked(1, 2, "ab" * 32), facts(), S.FAILED, ["Announce"], "keep failing BLAKE3"),
    ("scrub finds rot: fetch again", record(S.SEEDING), lc.ScrubFoundBad(1, "cd" * 32), facts(CACHE), S.DOWNLOADING,
     ["Refetch", "Announce"], None),
    ("installed", record(S.INSTALLING, ticket=4), lc.InstallDone(4), facts(), S.INSTALLED, ["Collect", "Announce"], None),
    ("an OS image written into the other boot slot waits for its trial boot", record(S.INSTALLING, ticket=4),
     lc.InstallDone(4), facts(current="1.0", pending="2.0"), S.BOOT_PENDING, ["Collect", "Announce"], None),
    ("resumed before the trial boot: still pending", record(), lc.Resumed(manifest()),
     facts(current="1.0", pending="2.0"), S.BOOT_PENDING, ["Swarm"], None),
    ("the trial boot confirmed it: installed", record(S.BOOT_PENDING), lc.InstallsChanged(),
     facts(current="2.0", previous="1.0"), S.INSTALLED, ["Announce"], None),
    ("the trial boot fell back: rolled back and held", record(S.BOOT_PENDING), lc.InstallsChanged(),
     facts(current="1.0", held={"2.0"}), S.ROLLED_BACK, ["Announce"], "held"),
    ("health check failed: rolled back", record(S.INSTALLING, ticket=4), lc.InstallDone(4, "health check exited 1"),
     facts(), S.ROLLED_BACK, ["Collect", "Announce"], "health check"),
    ("install failed: retried", record(S.INSTALLING, ticket=4), lc.InstallFailed(4, "disk full"), facts(), S.FAILED,
     ["Announce"], "disk full"),
    ("revoked while running: roll back", record(S.INSTALLED), lc.RolloutChanged(), facts(current="2.0", decision=REVOKED),
     S.REVOKED, ["RollBack", "Announce"], "revoked"),
    ("revoked, not running: hold", record(S.SUPERSEDED), lc.RolloutChanged(), facts(current="3.0", decision=REVOKED),
     S.REVOKED, ["Hold", "Announce"], "revoked"),
    ("revoked on a cache", record(S.SEEDING), lc.RolloutChanged(), facts(CACHE, decision=REVOKED), S.REVOKED,
     ["Announce"], "revoked"),
    ("revoked during install: undone when it lands", record(S.REVOKED, ticket=4), lc.InstallDone(4), facts(current="2.0"),
     S.REVOKED, ["RollBack"], None),
    ("resumed rollout: verify again, then install", record(S.STAGED, ticket=1), lc.RolloutChanged(),
     facts(decision=INSTALL_NOW), S.VERIFYING, ["Verify"], None),
    ("its install window opened (no rollout holds it): verify again, then install", record(S.STAGED, ticket=1),
     lc.RolloutChanged(), facts(), S.VERIFYING, ["Verify"], None),
    ("its install window is shut: still staged", record(S.STAGED, ticket=1), lc.RolloutChanged(),
     facts(decision=Decision(WAIT, "waits for its install window")), S.STAGED, [], None),
    ("operator rolled back: rolled back", record(S.INSTALLED), lc.InstallsChanged(),
     facts(current="1.0", previous="2.0", held={"2.0"}), S.ROLLED_BACK, ["Announce"], "held"),
    ("a newer one installed: previous", record(S.INSTALLED), lc.InstallsChanged(), facts(current="3.0", previous="2.0"),
     S.PREVIOUS, ["Announce"], None),
    ("retry: torrent error resumes", record(S.FAILED, retry=True), lc.RetryDue("error"), facts(), S.DOWNLOADING,
     ["ResumeTorrent"], None),
    ("retry: torrent finished verifies", record(S.FAILED, retry=True), lc.RetryDue("finished"), facts(), S.VERIFYING,
     ["Verify"], None),
    ("lay-out failed (disk full): retried", record(S.DOWNLOADING), lc.LayOutFailed("disk full"), facts(), S.FAILED,
     ["Announce"], "disk full"),
    ("retry: a release out of the session is laid out again", record(S.FAILED, retry=True), lc.RetryDue("absent"),
     facts(), S.DOWNLOADING, ["Swarm"], None),
    ("no retry after bad chunks for good", record(S.FAILED, retry=False), lc.RetryDue("finished"), facts(), S.FAILED,
     [], None),
    ("a late torrent notice changes nothing", record(S.INSTALLED), lc.TorrentFinished(), facts(current="2.0"),
     S.INSTALLED, [], None),
]


@pytest.mark.parametrize(("name", "before", "event", "known", "state", "effects", "says"), TRANSITIONS,
                         ids=[t[0] for t in TRANSITIONS])
def test_transition(name, before, event, known, state, effects, says):
    after, done = lc.step(before, event, known, NOW)
    assert after.state is state
    assert kinds(done) == effects
    if says is None:
        assert after.reason is None or after.state in (S.LISTED, S.REFUSED)
    else:
        assert says in (after.reason or "")


def test_every_event_type_has_a_rule_for_every_state():
    for event_type in lc.transitions.APPLIES_IN:
        assert event_type in lc.transitions._HANDLERS
    assert set(lc.transitions.APPLIES_IN) == set(lc.Event.__args__)


def test_the_catalog_choice_is_the_newest_meant_for_us_not_yet_known():
    offers = [lc.Offer("pos-os", "1.0"), lc.Offer("pos-os", "1.10"), lc.Offer("pos-os", "1.9"),
              lc.Offer("kiosk-app", "3", device_classes=("kiosk",)), lc.Offer("till-app", "5", stores=("S9*",))]
    chosen = lc.choose(offers, {}, DEVICE, {})
    assert [(o.name, o.version) for o in chosen] == [("pos-os", "1.10")]
    # a rollout not yet reaching this store leaves the next older version in play
    held_back = {("pos-os", "1.10"): NOT_YET}
    assert [(o.name, o.version) for o in lc.choose(offers, {}, DEVICE, held_back)] == [("pos-os", "1.9")]
    # known releases are not taken again, except a listed one whose manifest could not be fetched
    known = {"pos-os@1.10": record(S.DOWNLOADING, version="1.10")}
    assert lc.choose(offers, known, DEVICE, {}) == []
    assert len(lc.choose(offers, {"pos-os@1.10": record(version="1.10")}, DEVICE, {})) == 1
    assert lc.choose(offers, {"pos-os@1.10": record(S.REFUSED, version="1.10")}, DEVICE, {}) == []
    # a cache serves every class of its store
    assert {o.name for o in lc.choose(offers, {}, CACHE, {})} == {"pos-os", "kiosk-app"}
    assert lc.meant_for(lc.Offer("x", "1"), CACHE, Decision(FETCH, "ring reaches"))


def test_garbage_keeps_current_previous_and_what_is_on_its_way():
    records = [record(S.INSTALLED, "3.0"), record(S.PREVIOUS, "2.0"), record(S.SUPERSEDED, "1.0"),
               record(S.DOWNLOADING, "4.0"), record(S.REFUSED, "0.9")]
    keep = lc.versions_to_keep(records, DEVICE, {"pos-os": lc.Installed("3.0", "2.0")})
    assert keep == {"pos-os": {"3.0", "2.0", "4.0"}}
    cache = [record(S.SEEDING, v) for v in ("1.0", "1.10", "1.9")]
    assert lc.versions_to_keep(cache, CACHE, {}) == {"pos-os": {"1.10", "1.9"}}
    assert lc.newest_carried(cache, "pos-os") == "1.10"


# ---- properties over any order of events -----------------------------------------------------------------

VERSIONS = ("1.0", "2.0", "3.0")
CURRENT = -1  # a ticket drawn as "the one the release has in flight when the event arrives"
DECISIONS = (None, INSTALL_NOW, PAUSED, REVOKED, NOT_YET)


# The strategies are made once, here: a strategy made inside the draw loop was analysed afresh at every draw,
# and that took most of the test's time (cProfile: hypothesis' strategy properties, not posswarm's step).
_VERSION_OR_NONE = st.sampled_from((None, *VERSIONS))
_DISK = st.tuples(_VERSION_OR_NONE, _VERSION_OR_NONE, st.sets(st.sampled_from(VERSIONS), max_size=2),
                  st.sampled_from((None, None, *VERSIONS)))
_DECISION = st.sampled_from(DECISIONS)
_TICKET = st.sampled_from((CURRENT, CURRENT, CURRENT, 0, 1, 2))  # mostly the one in flight
# the events that move a release forward come often; the rest of the world interferes between them
_EVENT = st.sampled_from((
    lambda v, t: lc.Listed(), lambda v, t: lc.ManifestArrived(manifest(v)), lambda v, t: lc.ManifestArrived(manifest(v)),
    lambda v, t: lc.ManifestBad("bad signature"), lambda v, t: lc.Unreachable("timed out"),
    lambda v, t: lc.Resumed(manifest(v)), lambda v, t: lc.TorrentFinished(), lambda v, t: lc.TorrentFinished(),
    lambda v, t: lc.TorrentFailed("disk full"), lambda v, t: lc.ChunksChecked(t), lambda v, t: lc.ChunksChecked(t),
    lambda v, t: lc.ChunksChecked(t), lambda v, t: lc.ChunksChecked(t, 1, "ab" * 32),
    lambda v, t: lc.ScrubFoundBad(1, "ab" * 32), lambda v, t: lc.InstallDone(t), lambda v, t: lc.InstallDone(t),
    lambda v, t: lc.InstallDone(t, "health check failed"), lambda v, t: lc.InstallFailed(t, "disk full"),
    lambda v, t: lc.RolloutChanged(), lambda v, t: lc.RolloutChanged(), lambda v, t: lc.InstallsChanged(),
    lambda v, t: lc.LayOutFailed("disk full"), lambda v, t: lc.RetryDue("finished"), lambda v, t: lc.RetryDue("error"),
    lambda v, t: lc.RetryDue("running"), lambda v, t: lc.RetryDue("absent")))


@st.composite
def histories(draw):
    """A release's life with the world changing under it: events in any order, any ticket, changing facts."""
    version = draw(st.sampled_from(VERSIONS))
    node = draw(st.sampled_from((DEVICE, DEVICE, CACHE)))
    steps = []
    for _ in range(draw(st.integers(1, 40))):
        current, previous, held, pending = draw(_DISK)
        known = lc.Facts(node, lc.Installed(current, previous, frozenset(held), pending), draw(_DECISION),
                         draw(_VERSION_OR_NONE))
        ticket = draw(_TICKET)
        steps.append((draw(_EVENT)(version, ticket), known))
    return version, steps


@settings(max_examples=1500, deadline=None)
@given(histories())
def test_no_event_order_installs_what_it_must_not(history):
    """Installed is reached only through verified chunks and a verified payload (or by what the disk says runs);
    an install is never asked for a held or revoked version, nor one older than what runs."""
    version, steps = history
    r = lc.listed("pos-os", version, 0.0)
    verified_ticket = None  # the ticket of the Install asked for right after a good BLAKE3 check of every chunk
    for i, (event, known) in enumerate(steps):
        if getattr(event, "ticket", None) == CURRENT:
            event = replace(event, ticket=r.ticket)
        before = r
        r, effects = lc.step(r, event, known, float(i))
        for effect in effects:
            if isinstance(effect, lc.Install):
                assert isinstance(event, lc.ChunksChecked) and not event.bad and before.state is S.VERIFYING
                assert event.ticket == before.ticket, "an install after a stale check"
                assert version not in known.installed.held, "installs a held version"
                assert known.decision in (None, INSTALL_NOW), f"installs against rollout {known.decision}"
                current = known.installed.current
                assert current is None or version_key(version) > version_key(current), "a downgrade"
                assert not known.node.is_cache
                verified_ticket = effect.ticket
            if isinstance(effect, (lc.Verify, lc.Install)):
                assert effect.ticket == r.ticket
        if r.state is S.INSTALLED and before.state is not S.INSTALLED:
            by_disk = known.installed.current == version and not isinstance(event, lc.InstallDone)
            by_install = (isinstance(event, lc.InstallDone) and event.problem is None and before.state is S.INSTALLING
                          and event.ticket == verified_ticket)
            assert by_disk or by_install, f"installed by {event} from {before.state}"
        if r.state in (S.INSTALLING, S.INSTALLED) and before.state not in (S.INSTALLING, S.INSTALLED):
            assert r.manifest is not None
        if before.state is S.REFUSED:
            assert r.state is S.REFUSED, "a verdict is final"
        if isinstance(event, lc.Unreachable):
            assert r.state is not S.REFUSED or before.state is S.REFUSED, "a network failure became a verdict"
        if known.node.is_cache:
            assert r.state not in (S.INSTALLING, S.INSTALLED, S.PREVIOUS, S.SUPERSEDED, S.ROLLED_BACK, S.BOOT_PENDING)


@pytest.mark.parametrize(
    ("node", "known", "fresh", "taken"),
    [
        (DEVICE, {}, True, [("pos-os", "1.10")]),
        (DEVICE, {}, False, []),  # central's signed state is stale: nothing new starts
        (CACHE, {}, False, []),  # a cache of an offline store fetches nothing new either
        (DEVICE, {"pos-os@1.10": record(version="1.10")}, False, []),  # not even a listed one's retry
        (DEVICE, {"pos-os@1.10": record(version="1.10")}, True, [("pos-os", "1.10")]),
    ],
)
def test_a_stale_central_state_starts_nothing_new(node, known, fresh, taken):
    offers = [lc.Offer("pos-os", "1.9"), lc.Offer("pos-os", "1.10")]
    chosen = lc.choose(offers, known, node, {}, central_fresh=fresh)
    assert [(o.name, o.version) for o in chosen] == taken
