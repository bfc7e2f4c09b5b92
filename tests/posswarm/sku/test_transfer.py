"""A bulk transfer as rows: whole vouched buckets written as they are, everything else on its own signature."""

import os
import signal
import subprocess
import sys
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from structlog.testing import capture_logs

from posswarm.keys import KeyRing
from posswarm.sku import snapshot
from posswarm.sku.catalog import BUCKETS, SkuReplica, bucket_of, differing_buckets
from posswarm.sku.entry import InvalidSkuEntry, SkuEntry
from posswarm.sku.hlc import pack
from posswarm.sku.rows import SkuRows, entry_row, row_entry, row_of
from posswarm.sku.signature import SkuSignatures
from posswarm.sku.signature import sign as sign_entry
from posswarm.sku.transfer import apply_rows

T = 1_700_000_000_000
CENTRAL = Ed25519PrivateKey.generate()
KEYS = KeyRing([CENTRAL.public_key()])
COUNT = 12_000  # above catalog.BULK_FILL: the fill defers the lookup indexes


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A cache replica holding COUNT signed entries, and central's signed snapshot of them."""
    entries = [sign_entry(SkuEntry(f"SKU{i:06d}", pack(T, i), "central", barcode=f"{4000000000000 + i}",
                                   name=f"Item {i}", price_cents=100 + i), CENTRAL) for i in range(COUNT)]
    path = str(tmp_path_factory.mktemp("cache") / "sku.sqlite")
    replica = SkuReplica(path)
    replica.apply(entries)
    rows = sorted((bucket_of(e.code), e.code, e.leaf) for e in entries)
    snap = snapshot.sign(snapshot.build(max(e.hlc for e in entries), ((b, leaf) for b, _, leaf in rows)), CENTRAL)
    yield replica, snap
    replica.close()


def _held(snap):
    held = snapshot.HeldSnapshot(SkuSignatures(KEYS))
    assert held.take(snap, source="cache")
    return held


def test_a_fresh_replica_filled_by_vouched_buckets_equals_the_cache_and_checks_no_signature(cache, tmp_path):
    replica, snap = cache
    held, till = _held(snap), SkuReplica(str(tmp_path / "till.sqlite"))
    for first, last in ((0, 900), (900, BUCKETS)):  # as a till commits a transfer: whole buckets per batch
        assert apply_rows(till, held, replica.rows_in(range(first, last)), now_ms=T, source="cache") > 0
    assert not till.indexed  # a bulk fill: the lookup indexes are built once, after it
    assert till.bucket_digests() == replica.bucket_digests() == list(snap.digests) and len(till) == COUNT
    assert held.vouched == COUNT and held.signatures.refused == 0
    assert till.get("4000000000007") == replica.entry("SKU000007") and till.indexed
    # Sent again (a repeated transfer): every bucket is held now, so each goes through the merge, unchanged.
    assert apply_rows(till, held, replica.rows_in(range(BUCKETS)), now_ms=T, source="cache") == 0
    till.close()


def test_a_tampered_bucket_is_not_vouched_for_and_its_forged_entry_is_refused_by_name(cache):
    replica, snap = cache
    held, till = _held(snap), SkuReplica(":memory:")
    rows = replica.rows_in(range(8))
    victim = rows[3]
    rows[3] = entry_row(replace(row_entry(victim), price_cents=1))  # a cache rewrote one price, kept the signature
    with capture_logs() as logs:
        changed = apply_rows(till, held, rows, now_ms=T, source="cache")
    assert changed == len(rows) - 1
    assert till.entry(victim[0]) is None and held.signatures.refused == 1 and held.unvouched_buckets == 1
    refusal = [line for line in logs if line["event"] == "sku.refused_signature"]
    assert len(refusal) == 1 and "signature does not match" in refusal[0]["first"]
    # The other entries of the tampered bucket were each checked on their own signature; the rest by the digest.
    assert held.vouched == sum(1 for r in rows if r[1] != victim[1])


def test_a_tampered_bucket_of_unsigned_entries_keeps_nothing_of_it(cache):
    replica, snap = cache
    held, till = _held(snap), SkuReplica(":memory:")
    rows = [entry_row(replace(row_entry(r), key_id="", signature=b"")) for r in replica.rows_in([0, 1])]
    forged_bucket = rows[0][1]
    rows[0] = entry_row(replace(row_entry(rows[0]), name="Forged"))
    with capture_logs() as logs:
        apply_rows(till, held, rows, now_ms=T, source="cache")
    assert not [r for r in rows if r[1] == forged_bucket and till.entry(r[0]) is not None]
    assert till.bucket_digests()[forged_bucket] == snapshot.digest(())
    assert till.bucket_digests()[1 - forged_bucket] == snap.digests[1 - forged_bucket]  # the intact one filled
    assert len([line for line in logs if line["event"] == "sku.refused_signature"]) == 1


def test_a_vouched_bucket_stamped_too_far_ahead_is_refused_not_filled(cache):
    replica, snap = cache
    held, till = _held(snap), SkuReplica(":memory:")
    assert apply_rows(till, held, replica.rows_in([0]), now_ms=T - 10**9, source="cache") == 0
    assert len(till) == 0 and till.refused > 0


def test_rows_keep_every_bound_an_entry_keeps_and_hash_as_it_does():
    entry = sign_entry(SkuEntry("SKU1", pack(T, 1), "central", barcode="4006381333931", name="Stift \u00e4",
                                price_cents=150), CENTRAL)
    row = row_of(entry.to_wire())
    assert row == entry_row(entry) and row_entry(row) == entry and row[9] == entry.leaf and row[1] == entry.bucket
    assert SkuRows.from_wires([entry.to_wire()]) == (entry,)
    for field, value in ((0, ""), (1, -5), (2, "o" * 65), (3, 1), (5, "n" * 257), (6, 2**53), (9, b"short"),
                         (8, "not a key id")):
        wire = entry.to_wire()
        wire[field] = value
        with pytest.raises(InvalidSkuEntry, match="sku "):
            row_of(wire)
    with pytest.raises(InvalidSkuEntry, match="10-item list"):
        row_of(entry.to_wire()[:5])


_CRASHING_FILL = """
import os, signal, sys
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from posswarm.keys import KeyRing
from posswarm.sku.catalog import SkuReplica
from posswarm.sku.signature import SkuSignatures
from posswarm.sku.snapshot import HeldSnapshot, Snapshot
from posswarm.sku.transfer import apply_rows

cache_path, till_path, key_path, snapshot_path = sys.argv[1:]
public = Ed25519PrivateKey.from_private_bytes(open(key_path, "rb").read()).public_key()
held = HeldSnapshot(SkuSignatures(KeyRing([public])))
assert held.take(Snapshot.from_wire(open(snapshot_path, "rb").read()), source="cache")
cache, till = SkuReplica(cache_path), SkuReplica(till_path)
for first, last in ((0, 900), (900, 1000)):
    apply_rows(till, held, cache.rows_in(range(first, last)), now_ms=None, source="cache")
os.kill(os.getpid(), signal.SIGKILL)  # the till dies two commits into its fill, before it ends
"""


def _run_fill_and_die(replica, snap, tmp_path) -> str:
    key_path, snapshot_path = tmp_path / "key", tmp_path / "snapshot"
    key_path.write_bytes(CENTRAL.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                               serialization.NoEncryption()))
    snapshot_path.write_bytes(snap.to_wire())
    till_path = str(tmp_path / "till.sqlite")
    done = subprocess.run([sys.executable, "-c", _CRASHING_FILL, replica.path, till_path, str(key_path),
                           str(snapshot_path)], capture_output=True, timeout=120, env=os.environ)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()
    return till_path


def test_a_fill_killed_part_way_is_wiped_when_opened_and_filled_again_whole(cache, tmp_path):
    replica, snap = cache
    till_path = _run_fill_and_die(replica, snap, tmp_path)
    assert os.path.exists(till_path + ".filling")  # written unsynced: a power cut could have torn it
    with capture_logs() as logs:
        till = SkuReplica(till_path)
    assert [line["event"] for line in logs] == ["sku.fill_restarted"] and not os.path.exists(till_path + ".filling")
    assert len(till) == 0 and till.indexed
    missing = differing_buckets(till.bucket_digests(), replica.bucket_digests())  # what the till's digest asks for
    assert len(missing) == BUCKETS - sum(d == snapshot.digest(()) for d in replica.bucket_digests())
    held = _held(snap)
    apply_rows(till, held, replica.rows_in(missing), now_ms=T, source="cache")
    till.build_indexes()  # the fill is over: synced, and the marker gone
    assert till.bucket_digests() == replica.bucket_digests() and len(till) == COUNT
    assert held.signatures.refused == 0 and held.vouched == COUNT and not os.path.exists(till_path + ".filling")
    till.close()


def test_a_fill_stopped_part_way_resumes_with_the_buckets_it_lacks(cache, tmp_path):
    replica, snap = cache
    till, held = SkuReplica(str(tmp_path / "till.sqlite")), _held(snap)
    apply_rows(till, held, replica.rows_in(range(900)), now_ms=T, source="cache")
    assert os.path.exists(till.path + ".filling")
    till.close()  # the node stopped: what the fill wrote is synced
    assert not os.path.exists(till.path + ".filling")
    till = SkuReplica(till.path)
    mine = till.bucket_digests()
    assert all(mine[b] == snap.digests[b] for b in range(900))  # whole buckets, each with its digest
    missing = differing_buckets(mine, replica.bucket_digests())
    assert missing and min(missing) >= 900
    apply_rows(till, held, replica.rows_in(missing), now_ms=T, source="cache")
    assert till.bucket_digests() == replica.bucket_digests() and len(till) == COUNT
    till.close()
