"""Central's signed catalog snapshot: one signature vouches for whole buckets, and only for exactly central's."""

from dataclasses import replace

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from posswarm.keys import KeyRing
from posswarm.sku import snapshot
from posswarm.sku.catalog import BUCKETS, SkuReplica, bucket_of
from posswarm.sku.entry import SkuEntry
from posswarm.sku.hlc import pack
from posswarm.sku.rows import entry_row
from posswarm.sku.signature import SkuSignatures
from posswarm.sku.signature import sign as sign_entry
from posswarm.storedata.device import _last_bucket

T = 1_700_000_000_000
CENTRAL = Ed25519PrivateKey.generate()
ROGUE = Ed25519PrivateKey.generate()
KEYS = KeyRing([CENTRAL.public_key()])


def _catalog(count: int, first: int = 0) -> list[SkuEntry]:
    return [sign_entry(SkuEntry(f"SKU{i:05d}", pack(T, i), "central", name=f"Item {i}", price_cents=100 + i), CENTRAL)
            for i in range(first, first + count)]


def _snapshot_of(entries: list[SkuEntry], watermark: int | None = None) -> snapshot.Snapshot:
    watermark = max(e.hlc for e in entries) if watermark is None else watermark
    rows = sorted((bucket_of(e.code), e.code, e.leaf) for e in entries if e.hlc <= watermark)
    return snapshot.sign(snapshot.build(watermark, ((b, leaf) for b, _, leaf in rows)), CENTRAL)


def _in_bucket_order(entries: list[SkuEntry]) -> list[SkuEntry]:
    return sorted(entries, key=lambda e: (bucket_of(e.code), e.code))


def test_a_signed_snapshot_vouches_for_every_entry_it_covers():
    entries = _catalog(3000)
    snap = _snapshot_of(entries)
    assert snapshot.problem(snap, KEYS) is None
    good, mismatched = snapshot.vouched(snap, _in_bucket_order(entries))
    assert len(good) == 3000 and mismatched == []


def test_its_digests_are_the_ones_a_replica_holding_the_same_entries_keeps():
    entries = _catalog(500)
    replica = SkuReplica(":memory:")
    replica.apply(entries)
    assert list(_snapshot_of(entries).digests) == replica.bucket_digests()


def test_a_tampered_entry_costs_its_bucket_only_and_is_never_vouched_for():
    entries = _in_bucket_order(_catalog(3000))
    snap = _snapshot_of(entries)
    entries[10] = replace(entries[10], price_cents=1)  # a cache rewrote one price
    good, mismatched = snapshot.vouched(snap, entries)
    assert 10 not in good and mismatched == [bucket_of(entries[10].code)]
    assert len(good) == 3000 - sum(bucket_of(e.code) == mismatched[0] for e in entries)


def test_a_left_out_or_added_entry_or_one_listed_twice_costs_the_bucket():
    entries = _in_bucket_order(_catalog(2000))
    snap = _snapshot_of(entries)
    first = next(i for i in range(len(entries) - 1) if bucket_of(entries[i].code) == bucket_of(entries[i + 1].code))
    bucket = bucket_of(entries[first].code)
    siblings = [e for e in entries if bucket_of(e.code) == bucket]
    intruder = next(replace(entries[first], code=f"X{n}") for n in range(10**6) if bucket_of(f"X{n}") == bucket)
    for changed in (entries[:first] + entries[first + 1:], [intruder, *entries], [entries[first], *entries]):
        good, mismatched = snapshot.vouched(snap, changed)
        assert mismatched == [bucket]
        assert not any(bucket_of(changed[i].code) == bucket for i in good)
        assert len(good) == len(entries) - len(siblings)


def test_entries_from_another_snapshot_are_not_vouched_for():
    old = _catalog(2000)
    newer = [sign_entry(replace(e, hlc=e.hlc + 5000, price_cents=e.price_cents + 1), CENTRAL) for e in old]
    snap = _snapshot_of(newer)
    mixed = _in_bucket_order([*old[:1000], *newer[1000:]])  # a cache mixing two generations
    good, mismatched = snapshot.vouched(snap, mixed)
    assert all(mixed[i] in newer for i in good)
    assert all(bucket_of(e.code) in mismatched for e in old[:1000])


def test_entries_above_the_watermark_are_left_to_their_own_signatures():
    entries = _catalog(1000)
    snap = _snapshot_of(entries[:900], watermark=entries[899].hlc)
    later = entries[950]
    good, _ = snapshot.vouched(snap, _in_bucket_order(entries))
    assert all(_in_bucket_order(entries)[i].hlc <= snap.watermark for i in good)
    assert later.hlc > snap.watermark


def test_a_forged_stale_or_altered_snapshot_is_refused_by_name():
    snap = _snapshot_of(_catalog(100))
    assert "older than the snapshot" in snapshot.problem(snap, KEYS, newest_watermark=snap.watermark + 1)
    assert snapshot.problem(snap, KEYS, newest_watermark=snap.watermark) is None  # the same one again is fine
    forged = snapshot.sign(replace(snap, key_id="", signature=b""), ROGUE)
    assert "not the root of trust's SKU key" in snapshot.problem(forged, KEYS)
    digests = list(snap.digests)
    digests[3] = bytes(16)
    assert "does not match" in snapshot.problem(replace(snap, digests=tuple(digests)), KEYS)
    assert "does not match" in snapshot.problem(replace(snap, watermark=snap.watermark + 10**6), KEYS)
    assert "unsigned" in snapshot.problem(replace(snap, key_id="", signature=b""), KEYS)
    after_rotation = KeyRing([ROGUE.public_key()])  # the root now names another SKU key
    assert "not the root of trust's SKU key" in snapshot.problem(snap, after_rotation)


def test_the_wire_form_round_trips_and_oversize_or_malformed_input_is_refused_unread():
    snap = _snapshot_of(_catalog(50))
    assert snapshot.Snapshot.from_wire(snap.to_wire()) == snap
    assert len(snap.to_wire()) <= snapshot.MAX_WIRE
    for wire in (b"\x00" * (snapshot.MAX_WIRE + 1), b"\xc1", snap.to_wire()[:-70], "text",
                 __import__("msgpack").packb([1, b"\x00" * 16, "", b""]),
                 __import__("msgpack").packb([-1, b"\x00" * 16 * BUCKETS, "", b""])):
        with pytest.raises(snapshot.InvalidSnapshot):
            snapshot.Snapshot.from_wire(wire)


def test_a_till_loads_a_bucket_forged_under_a_real_snapshot_without_the_forged_entry():
    entries = _in_bucket_order(_catalog(2000))
    signatures = SkuSignatures(KEYS)
    held = snapshot.HeldSnapshot(signatures)
    assert held.take(_snapshot_of(entries), source="cache")
    forged_at = 5
    sent = [*entries]
    sent[forged_at] = replace(sent[forged_at], price_cents=1)  # its signature no longer matches
    replica = SkuReplica(":memory:")
    assert replica.apply(sent, check=held.check_for(sent, source="cache")) == 1999
    assert replica.entry(entries[forged_at].code) is None
    assert signatures.refused == 1 and held.unvouched_buckets == 1
    assert held.vouched == 2000 - sum(bucket_of(e.code) == bucket_of(sent[forged_at].code) for e in sent)


def test_a_till_refuses_a_forged_or_older_snapshot_and_counts_it():
    entries = _catalog(200)
    signatures = SkuSignatures(KEYS)
    held = snapshot.HeldSnapshot(signatures)
    newer, older = _snapshot_of(entries), _snapshot_of(entries[:100])
    assert held.take(newer, source="cache") and held.take(newer, source="cache")
    assert not held.take(older, source="cache")
    assert not held.take(snapshot.sign(replace(newer, watermark=newer.watermark + 1), ROGUE), source="cache")
    assert held.snapshot == newer and signatures.refused == 2
    replica = SkuReplica(":memory:")
    unsigned = [replace(e, key_id="", signature=b"") for e in _in_bucket_order(entries)]
    forged_snapshot = snapshot.HeldSnapshot(SkuSignatures(KEYS))
    assert not forged_snapshot.take(snapshot.sign(_snapshot_of(unsigned), ROGUE), source="cache")
    assert replica.apply(unsigned, check=forged_snapshot.check_for(unsigned, source="cache")) == 0


def test_a_batch_cut_inside_a_bucket_holds_that_bucket_back_whole():
    entries = [entry_row(e) for e in _in_bucket_order(_catalog(300))]
    tail = _last_bucket(entries)
    assert tail and all(bucket_of(e[0]) == bucket_of(entries[-1][0]) for e in tail)
    assert bucket_of(entries[-len(tail) - 1][0]) != bucket_of(entries[-1][0])
    assert _last_bucket(tail) == [] and _last_bucket([]) == []  # a batch of one bucket is applied as it is
