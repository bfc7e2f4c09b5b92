"""Rollout documents: canonical encoding, signatures, replay by sequence, the fetch/install/hold/roll-back decision."""

from dataclasses import replace

import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from posswarm.manifest import ChunkRef, Manifest, PayloadFile, Targets
from posswarm.rollout import (
    FETCH,
    HOLD,
    INSTALL,
    MAX_ROLLOUT_BYTES,
    NOT_FOR_YOU,
    ROLL_BACK,
    Rollout,
    RolloutError,
    decide,
    implied_rollout,
    newer,
    sign_rollout,
    verify_rollout,
)

RINGS = ("canary", "wave-1", "all")


def sample(**changes) -> Rollout:
    r = Rollout(
        name="pos-os", version="2026.11", sequence=3, state="active", ring="wave-1", rings=RINGS,
        reached=("s-0001", "s-00[1-4]?"), stores=("s-*",), device_classes=("till", "kiosk"), created=1_800_000_000,
    )
    return replace(r, **changes)


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def test_sign_then_verify_round_trips(key):
    signed = sign_rollout(sample(), key)
    got = verify_rollout(signed.to_bytes(), key.public_key(), name="pos-os", version="2026.11")
    assert got == signed and got.sequence == 3 and got.ring == "wave-1" and len(got.signature) == 64


def test_a_rollout_signed_by_another_key_is_refused_naming_both(key):
    other = Ed25519PrivateKey.generate()
    data = sign_rollout(sample(), other).to_bytes()
    with pytest.raises(RolloutError, match=r"^release pos-os 2026.11: rollout is signed by key [0-9a-f]{16}, not "):
        verify_rollout(data, key.public_key())


@pytest.mark.parametrize("change", [
    {"state": "revoked"}, {"state": "paused"}, {"ring": "all"}, {"reached": ("*",)}, {"stores": ("*",)},
    {"device_classes": ("*",)}, {"sequence": 99}, {"version": "2026.12"},
])
def test_any_field_changed_after_signing_is_refused(key, change):
    tampered = replace(sign_rollout(sample(), key), **change)
    with pytest.raises(RolloutError, match="rollout signature does not match key"):
        verify_rollout(tampered.to_bytes(), key.public_key())


def test_a_manifest_signature_cannot_be_replayed_as_a_rollout(key):
    # Same key signs both kinds; the signing contexts keep one from passing for the other.
    r = sign_rollout(sample(), key)
    forged = replace(r, signature=key.sign(msgpack.packb(r._fields(), use_bin_type=True)))
    with pytest.raises(RolloutError, match="signature does not match"):
        verify_rollout(forged.to_bytes(), key.public_key())


def test_another_releases_rollout_is_refused_for_this_release(key):
    data = sign_rollout(sample(version="2026.10"), key).to_bytes()
    with pytest.raises(RolloutError, match="release pos-os 2026.11: was handed the rollout of pos-os 2026.10"):
        verify_rollout(data, key.public_key(), name="pos-os", version="2026.11")


def test_only_a_higher_sequence_replaces_the_held_rollout(key):
    old, new = sign_rollout(sample(sequence=3), key), sign_rollout(sample(sequence=4, state="paused"), key)
    assert newer(None, old) is old
    assert newer(old, new) is new
    assert newer(new, replace(new)) is new  # the same document again changes nothing
    with pytest.raises(RolloutError, match="rollout sequence 3 does not supersede sequence 4 already held"):
        newer(new, old)  # a replayed older document, though validly signed
    with pytest.raises(RolloutError, match="sequence 4 does not supersede sequence 4"):
        newer(new, sign_rollout(sample(sequence=4, state="active"), key))  # same number, other content


def test_non_canonical_encoding_is_refused(key):
    fields = sign_rollout(sample(), key)._fields() | {"signature": b"\x00" * 64}
    extra = msgpack.packb(fields | {"extra": 1}, use_bin_type=True)
    with pytest.raises(RolloutError, match="not canonically encoded"):
        Rollout.from_bytes(extra)
    reordered = msgpack.packb(dict(reversed(list(fields.items()))), use_bin_type=True)
    with pytest.raises(RolloutError, match="not canonically encoded"):
        Rollout.from_bytes(reordered)


@pytest.mark.parametrize("field, value, needle", [
    ("state", "live", "state 'live' is not one of active, paused, revoked"),
    ("ring", "wave-9", "ring 'wave-9' is not one of its rings"),
    ("rings", [], "rings is not a list"),
    ("rings", ["a", "a"], "rings repeats a ring"),
    ("reached", [], "reached is not a list"),
    ("stores", ["x" * 257], "stores is not a list"),
    ("sequence", -1, "sequence is not an integer"),
    ("sequence", True, "'sequence' has the wrong type"),
    ("name", "../etc", "not a safe directory name"),
    ("format", 3, "format 3 is not supported"),
    ("activate", "tonight", "use 'now', 'window' or 'at"),
    ("activate", "at 2026-12-02T02:00+01:00", "(UTC)"),
    ("activate_stores", [["s-0042"]], "activate_stores is not a list"),
    ("activate_stores", [["s-0042", "tonight"]], "use 'now', 'window' or 'at"),
    ("activate_stores", [["", "now"]], "an activate_stores pattern is not a list"),
    ("key_id", "XYZ", "key_id is not 16 lowercase hex chars"),
])
def test_malformed_fields_give_one_line_errors(field, value, needle):
    fields = sample()._fields() | {"signature": b""}
    fields[field] = value
    with pytest.raises(RolloutError, match=None) as err:
        Rollout.from_bytes(msgpack.packb(fields, use_bin_type=True))
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_activate_is_signed_and_a_format_1_rollout_still_reads_as_window(key):
    signed = sign_rollout(sample(activate="at 2026-12-02T02:00Z"), key)
    got = verify_rollout(signed.to_bytes(), key.public_key())
    assert got.activate == "at 2026-12-02T02:00Z" and got.format == 2
    tampered = signed.to_bytes().replace(b"at 2026-12-02T02:00Z", b"now".ljust(20))
    with pytest.raises(RolloutError):
        verify_rollout(tampered, key.public_key())
    tonight = sign_rollout(sample(activate_stores=(("s-0042", "now"), ("s-00*", "at 2026-12-02T02:00Z"))), key)
    got = verify_rollout(tonight.to_bytes(), key.public_key())
    assert [got.activate_in(s) for s in ("s-0042", "s-0043", "s-1000")] == ["now", "at 2026-12-02T02:00Z", "window"]
    old = sign_rollout(sample(format=1), key)
    assert b"activate" not in old.to_bytes()
    back = verify_rollout(old.to_bytes(), key.public_key())
    assert (back.format, back.activate) == (1, "window") and back.to_bytes() == old.to_bytes()


def test_oversized_input_is_refused_before_parsing():
    with pytest.raises(RolloutError, match="exceeds the 262144 byte limit"):
        Rollout.from_bytes(b"\x00" * (MAX_ROLLOUT_BYTES + 1))


def test_signing_refuses_a_rollout_a_node_could_not_parse(key):
    with pytest.raises(RolloutError, match="ring 'nowhere' is not one of its rings"):
        sign_rollout(sample(ring="nowhere"), key)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_arbitrary_bytes_only_raise_rollout_error(data):
    try:
        Rollout.from_bytes(data)
    except RolloutError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_fuzz_mutated_rollout_only_raises_rollout_error(data):
    good = sample(signature=b"\x07" * 64).to_bytes()
    pos = data.draw(st.integers(0, len(good) - 1))
    cut = data.draw(st.integers(0, 8))
    mutated = good[:pos] + data.draw(st.binary(max_size=8)) + good[pos + cut:]
    try:
        r = Rollout.from_bytes(mutated)
    except RolloutError:
        return
    assert r.to_bytes() == mutated  # anything accepted is canonical


_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.binary(max_size=40) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=15), inner, max_size=5),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(sample()._fields()) + ["signature", "extra"]), _VALUES)
def test_fuzz_one_field_replaced_only_raises_rollout_error(field, value):
    fields = sample()._fields() | {"signature": b""}
    fields[field] = value
    try:
        Rollout.from_bytes(msgpack.packb(fields, use_bin_type=True))
    except RolloutError:
        pass


# --- decide: every state and ring ---------------------------------------------------------------

CANARY = sample(ring="canary", reached=("s-0001",))
WAVE_1 = sample(ring="wave-1", reached=("s-0001", "s-001?"))
ALL = sample(ring="all", reached=("s-0001", "s-001?", "*"))


@pytest.mark.parametrize("rollout, store, role, device_class, action", [
    (CANARY, "s-0001", "cache", "-", FETCH),
    (CANARY, "s-0001", "device", "till", INSTALL),
    (CANARY, "s-0012", "cache", "-", NOT_FOR_YOU),  # wave-1 store, canary ring
    (CANARY, "s-0012", "device", "till", NOT_FOR_YOU),
    (WAVE_1, "s-0012", "cache", "-", FETCH),
    (WAVE_1, "s-0012", "device", "kiosk", INSTALL),
    (WAVE_1, "s-0001", "device", "till", INSTALL),  # a canary store stays reached
    (WAVE_1, "s-0200", "cache", "-", NOT_FOR_YOU),
    (ALL, "s-0200", "cache", "-", FETCH),
    (ALL, "s-0200", "device", "back-office", NOT_FOR_YOU),  # its class is not targeted
    (ALL, "x-0001", "cache", "-", NOT_FOR_YOU),  # reached by ring all, but not in the release's stores
])
def test_decide_follows_ring_stores_and_class(rollout, store, role, device_class, action):
    d = decide(rollout, store=store, device_class=device_class, role=role)
    assert d.action == action, d.reason
    assert d.reason.startswith("release pos-os 2026.11 (rollout 3): ")


def test_decide_reasons_say_why_in_words():
    assert "ring canary has not reached store s-0012 yet" in decide(CANARY, store="s-0012", device_class="till",
                                                                     role="device").reason
    assert "not back-office" in decide(ALL, store="s-0200", device_class="back-office", role="device").reason
    assert "not store x-0001" in decide(ALL, store="x-0001", device_class="till", role="cache").reason


@pytest.mark.parametrize("role", ["cache", "device"])
def test_paused_holds_reached_nodes_and_leaves_others_alone(role):
    paused = replace(WAVE_1, state="paused")
    d = decide(paused, store="s-0012", device_class="till", role=role)
    assert d.action == HOLD and "keep what you have, start nothing new" in d.reason
    assert decide(paused, store="s-0200", device_class="till", role=role).action == NOT_FOR_YOU


@pytest.mark.parametrize("store", ["s-0001", "s-0200", "x-0001"])
def test_revoked_rolls_back_everywhere_even_beyond_the_ring(store):
    # A revoked release is bad for every store: whoever runs it goes back, reached or not.
    d = decide(replace(CANARY, state="revoked"), store=store, device_class="till", role="device")
    assert d.action == ROLL_BACK and "previous release" in d.reason


def test_decide_refuses_an_unknown_role():
    with pytest.raises(ValueError, match="role 'seeder'"):
        decide(ALL, store="s-0001", device_class="till", role="seeder")


def test_a_release_without_a_rollout_follows_its_manifest_at_ring_all():
    m = Manifest(
        name="pos-os", version="2026.11", kind="image", files=(PayloadFile("image.bin", 0o644, 5, (ChunkRef(b"\1" * 32, 5),)),),
        total_size=5, payload_blake3=b"\3" * 32, info_hash_v1=b"\4" * 20, info_hash_v2=b"\5" * 32, piece_size=262144,
        targets=Targets(("s-00*",), ("till",), "pilot"), created=1, key_id="0123456789abcdef",
    )
    r = implied_rollout(m)
    assert (r.sequence, r.state, r.ring, r.reached) == (0, "active", "all", ("*",))
    assert decide(r, store="s-0042", device_class="till", role="device").action == INSTALL
    assert decide(r, store="s-0042", device_class="kiosk", role="device").action == NOT_FOR_YOU
    assert decide(r, store="s-1042", device_class="till", role="cache").action == NOT_FOR_YOU


def test_the_catalog_carries_the_rollout_sequence_and_still_reads_catalogs_without_it(key, tmp_path):
    from posswarm.catalog.model import Catalog
    from posswarm.catalog.shelf import Shelf

    m = Manifest(
        name="pos-os", version="2026.11", kind="image", files=(PayloadFile("image.bin", 0o644, 5, (ChunkRef(b"\1" * 32, 5),)),),
        total_size=5, payload_blake3=b"\3" * 32, info_hash_v1=b"\4" * 20, info_hash_v2=b"\5" * 32, piece_size=262144,
        targets=Targets(), created=1, key_id="0123456789abcdef",
    )
    shelf = Shelf()
    shelf.put(m, tmp_path)
    assert shelf.catalog().releases[0].rollout_sequence == 0 and shelf.rollout("pos-os", "2026.11") is None
    r = sign_rollout(sample(sequence=7), key)
    shelf.put_rollout(r, r.to_bytes())
    doc = shelf.catalog().to_json()
    assert doc["releases"][0]["rollout_sequence"] == 7 and shelf.rollout("pos-os", "2026.11") == r.to_bytes()
    assert Catalog.from_json(doc, source="t").releases[0].rollout_sequence == 7
    del doc["releases"][0]["rollout_sequence"]  # as an older seeder or cache serves it
    assert Catalog.from_json(doc, source="t").releases[0].rollout_sequence == 0
