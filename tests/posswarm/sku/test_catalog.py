"""SKU replica: LWW converges in any order, tombstones win, anti-entropy rounds make replicas equal."""

import sqlite3

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from posswarm.errors import PosswarmError
from posswarm.sku.catalog import BUCKETS, BULK_FILL, SkuReplica, bucket_of, differing_buckets
from posswarm.sku.entry import InvalidSkuEntry, SkuEntry, wins
from posswarm.sku.hlc import MAX_SKEW_MS, pack

T = 1_700_000_000_000


def merge(mine, theirs):
    """The pure rule folded over entries: what every replica must end up holding."""
    return theirs if wins(theirs.version, None if mine is None else mine.version) else mine


def _all(replica):
    return sorted(replica.entries_in(range(BUCKETS)), key=lambda e: e.code)


def test_newer_write_wins_older_is_ignored_and_barcode_finds_it():
    replica = SkuReplica(":memory:")
    v1 = SkuEntry("SKU1", pack(T, 0), "central", barcode="4006381333931", name="Pen", price_cents=150)
    v2 = SkuEntry("SKU1", pack(T, 1), "central", barcode="4006381333931", name="Pen", price_cents=120)
    assert replica.apply([v2]) == 1
    assert replica.apply([v1]) == 0
    assert replica.apply([v2]) == 0
    assert replica.get("SKU1") == v2
    assert replica.get("4006381333931") == v2
    assert replica.get("nope") is None


def test_a_tombstone_hides_the_sku_and_beats_older_writes():
    replica = SkuReplica(":memory:")
    live = SkuEntry("SKU1", pack(T, 0), "central", barcode="123", price_cents=150)
    dead = SkuEntry("SKU1", pack(T, 1), "central", deleted=True)
    replica.apply([dead, live])
    assert replica.get("SKU1") is None
    assert replica.get("123") is None
    assert replica.entry("SKU1") == dead


def test_equal_hlc_is_decided_by_origin_then_content_the_same_everywhere():
    a = SkuEntry("SKU1", 5, "central", price_cents=1)
    b = SkuEntry("SKU1", 5, "store-042", price_cents=2)
    c = SkuEntry("SKU1", 5, "store-042", price_cents=3)
    assert merge(a, b) == merge(b, a) == b
    assert merge(b, c) == merge(c, b)


def test_entries_from_the_far_future_are_refused_when_now_is_given():
    replica = SkuReplica(":memory:")
    future = SkuEntry("SKU1", pack(T + MAX_SKEW_MS + 1), "rogue-till", price_cents=1)
    assert replica.apply([future], now_ms=T) == 0
    assert replica.refused == 1
    assert replica.entry("SKU1") is None


def test_changes_since_pages_without_losing_tied_stamps():
    replica = SkuReplica(":memory:")
    entries = [SkuEntry(f"SKU{i}", pack(T, i // 3), f"node-{i % 3}") for i in range(10)]
    replica.apply(entries)
    cursor, seen = 0, []
    while page := replica.changes_since(cursor, limit=2):
        seen += page
        cursor = page[-1].hlc
    assert sorted(e.code for e in seen) == sorted(e.code for e in entries)
    assert replica.max_hlc() == pack(T, 3)


@pytest.mark.parametrize(
    "fields",
    [dict(code=""), dict(hlc=-1), dict(hlc=2**63), dict(origin=""), dict(price_cents=-1),
     dict(barcode="\ud800"), dict(deleted=1), dict(name="x" * 257),
     dict(code="x" * 65), dict(hlc=True), dict(origin="o" * 65), dict(barcode="4" * 65), dict(tax_class="A" * 33),
     dict(price_cents=2**53), dict(price_cents=1.5), dict(key_id="0123456789ABCDEF"), dict(key_id="0" * 17),
     dict(signature=b"x" * 63), dict(signature="x" * 64), dict(name=b"Pen"), dict(name="Caf\u00e9 \ud800"),
     dict(code="\u00e9" * 65)],  # fmt: skip
)
def test_bad_entries_are_refused(fields):
    with pytest.raises(InvalidSkuEntry):
        SkuEntry(**{"code": "SKU1", "hlc": 1, "origin": "central", **fields})


def test_text_beyond_ascii_within_its_bounds_is_an_entry():
    entry = SkuEntry("KAFFEE-\u00e9", 1, "central", name="Caf\u00e9 cr\u00e8me \u2615" * 20, tax_class="\u00e9" * 32)
    assert SkuEntry.from_wire(entry.to_wire()) == entry


def _rehashed(entries):
    """The digests of a replica that merged ``entries`` one at a time, each bucket re-hashed from its rows."""
    replica = SkuReplica(":memory:")
    for entry in entries:
        replica.apply([entry])
    return replica.bucket_digests()


def test_a_fill_of_empty_buckets_keeps_the_digests_a_rehash_would():
    entries = [SkuEntry(f"SKU{i:04d}", pack(T, i), "central", deleted=i % 7 == 0, price_cents=i) for i in range(3000)]
    twice = entries[:50] + [SkuEntry(e.code, e.hlc + 1, "central", price_cents=9) for e in entries[:50]]
    replica = SkuReplica(":memory:")
    assert replica.apply(entries + twice) == 3000
    assert replica.bucket_digests() == _rehashed(entries + twice)
    assert replica.entry("SKU0001").price_cents == 9


def test_a_fill_that_meets_a_newer_entry_already_held_keeps_the_newer():
    entries = [SkuEntry(f"SKU{i:04d}", pack(T, i), "central", price_cents=i) for i in range(2000)]
    newer = SkuEntry("SKU0042", pack(T + 1000, 0), "central", price_cents=4242)  # gossip that came in first
    replica = SkuReplica(":memory:")
    assert replica.apply([newer]) == 1
    assert replica.apply(entries) == 1999
    assert replica.entry("SKU0042") == newer
    assert replica.bucket_digests() == _rehashed([newer, *entries])


def test_digests_of_different_bucket_counts_are_a_clear_error():
    with pytest.raises(PosswarmError, match="upgrade"):
        differing_buckets([b""] * 4, [b""] * 8)


_codes = st.sampled_from([f"SKU{i}" for i in range(40)])
_entries = st.builds(
    SkuEntry,
    code=_codes,
    hlc=st.integers(0, 20),
    origin=st.sampled_from(["central", "store-042", "till-1"]),
    deleted=st.booleans(),
    barcode=st.sampled_from(["", "111", "222"]),
    name=st.text(max_size=8),
    price_cents=st.integers(0, 10_000),
)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_entries, max_size=60), st.randoms(use_true_random=False))
def test_lww_converges_regardless_of_order_and_duplication(entries, rnd):
    one, two = SkuReplica(":memory:"), SkuReplica(":memory:")
    one.apply(entries)
    shuffled = entries + entries[: len(entries) // 2]
    rnd.shuffle(shuffled)
    for i in range(0, len(shuffled), 7):
        two.apply(shuffled[i : i + 7])
    assert _all(one) == _all(two)
    assert one.bucket_digests() == two.bucket_digests()
    winners = {}
    for entry in entries:
        winners[entry.code] = merge(winners.get(entry.code), entry)
    assert _all(one) == sorted(winners.values(), key=lambda e: e.code)


def anti_entropy_round(a, b):
    """What the gossip driver will do: swap digests, then each side sends the differing buckets."""
    buckets = differing_buckets(a.bucket_digests(), b.bucket_digests())
    from_a, from_b = a.entries_in(buckets), b.entries_in(buckets)
    b.apply(from_a)
    a.apply(from_b)
    return buckets


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_entries, max_size=40), st.lists(_entries, max_size=40), st.lists(_entries, max_size=40))
def test_anti_entropy_converges_two_diverged_replicas_in_one_round(shared, only_a, only_b):
    a, b = SkuReplica(":memory:"), SkuReplica(":memory:")
    a.apply(shared + only_a)
    b.apply(only_b + shared)
    anti_entropy_round(a, b)
    assert _all(a) == _all(b)
    assert a.bucket_digests() == b.bucket_digests()
    assert anti_entropy_round(a, b) == []
    winners = {}
    for entry in shared + only_a + only_b:
        winners[entry.code] = merge(winners.get(entry.code), entry)
    assert _all(a) == sorted(winners.values(), key=lambda e: e.code)


def test_one_changed_sku_among_100k_costs_one_bucket(tmp_path):
    central, store = SkuReplica(str(tmp_path / "central.db")), SkuReplica(str(tmp_path / "store.db"))
    catalog = [SkuEntry(f"SKU{i:06d}", pack(T, 0), "central", barcode=f"{i:013d}", name=f"item {i}",
                        price_cents=i % 5000, tax_class="std") for i in range(100_000)]  # fmt: skip
    assert central.apply(catalog) == 100_000
    assert store.apply(catalog) == 100_000
    assert len(store) == 100_000
    assert store.get("0000000031337").code == "SKU031337"
    repriced = SkuEntry("SKU031337", pack(T + 1, 0), "central", barcode="0000000031337", name="item 31337",
                        price_cents=1, tax_class="std")  # fmt: skip
    central.apply([repriced])
    assert anti_entropy_round(central, store) == [bucket_of("SKU031337")]
    assert store.get("SKU031337").price_cents == 1
    assert central.bucket_digests() == store.bucket_digests()


V1 = (pack(T, 0), "central", b"\x01" * 16)


@pytest.mark.parametrize(
    ("theirs", "mine", "expected"),
    [
        (V1, None, True),  # nothing held: anything wins
        (V1, V1, False),  # the same entry again changes nothing
        ((pack(T, 1), "central", b"\x00" * 16), V1, True),  # a later clock wins whatever the rest
        ((pack(T - 1, 0), "store-042", b"\xff" * 16), V1, False),  # an older clock loses whatever the rest
        ((pack(T, 0), "store-042", b"\x00" * 16), V1, True),  # clock tie: origin decides
        ((pack(T, 0), "central", b"\x02" * 16), V1, True),  # clock and origin tie: the leaf decides
        ((pack(T, 0), "central", b"\x00" * 16), V1, False),
    ],
)
def test_last_writer_wins_rule(theirs, mine, expected):
    assert wins(theirs, mine) is expected
    if mine is not None and theirs != mine:
        assert wins(mine, theirs) is not expected  # exactly one of two different versions wins


def test_a_batch_holding_two_versions_of_a_sku_keeps_the_newer_in_either_order():
    old = SkuEntry("SKU1", pack(T, 0), "central", price_cents=150)
    new = SkuEntry("SKU1", pack(T, 1), "central", price_cents=120)
    for batch in ([old, new], [new, old]):
        replica = SkuReplica(":memory:")
        assert replica.apply(batch) == 1
        assert replica.entry("SKU1") == new


def test_bucket_pages_are_whole_buckets_of_signed_entries_up_to_the_watermark():
    replica = SkuReplica(":memory:", digests=False)
    signed = [SkuEntry(f"SKU{i:04d}", pack(T, i), "central", key_id="0123456789abcdef", signature=b"s" * 64)
              for i in range(600)]
    unsigned = SkuEntry("SKU9999", pack(T, 1), "central")
    replica.apply([*signed, unsigned])
    watermark = pack(T, 499)  # the 100 stamped later are the cursor's, not this snapshot's
    pages, first = [], 0
    while first is not None:
        wires, first = replica.signed_in_buckets(first, watermark, limit=50)
        pages.append([SkuEntry.from_wire(w) for w in wires])
    got = [entry for page in pages for entry in page]
    assert sorted(e.code for e in got) == [f"SKU{i:04d}" for i in range(500)]
    assert got == sorted(got, key=lambda e: (e.bucket, e.code))
    for before, after in zip(pages, pages[1:]):  # no bucket cut between two pages
        assert before[-1].bucket < after[0].bucket
    assert all(len(page) >= 50 for page in pages[:-1])
    assert got[0] == replica.entry(got[0].code)


def _indexes(path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")}


def _bulk(count: int, first: int = 0) -> list[SkuEntry]:
    return [SkuEntry(f"SKU{i:06d}", pack(T, i), "central", barcode=f"{4000000000000 + i}", price_cents=i)
            for i in range(first, first + count)]


def test_a_bulk_fill_of_an_empty_replica_builds_its_lookup_indexes_after_and_a_lookup_still_finds(tmp_path):
    path = str(tmp_path / "sku.sqlite")
    replica = SkuReplica(path)
    lookups = {"sku_barcode", "sku_hlc"}
    assert lookups <= _indexes(path)
    assert replica.apply(_bulk(BULK_FILL)) == BULK_FILL
    assert not replica.indexed and not lookups & _indexes(path)
    assert replica.apply(_bulk(BULK_FILL, BULK_FILL)) == BULK_FILL  # no longer empty: a plain merge
    assert replica.get(str(4000000000000 + 17)).code == "SKU000017"  # a scan mid-fill builds them first
    assert replica.indexed and lookups <= _indexes(path)
    assert replica.apply(_bulk(BULK_FILL, 2 * BULK_FILL)) == BULK_FILL and replica.indexed  # not empty: kept
    replica.close()


def test_a_replica_left_mid_fill_builds_its_lookup_indexes_when_opened_and_a_small_apply_builds_them(tmp_path):
    path = str(tmp_path / "sku.sqlite")
    replica = SkuReplica(path)
    replica.apply(_bulk(BULK_FILL))
    replica.close()  # the node stopped before the fill was over
    reopened = SkuReplica(path)
    assert reopened.indexed and {"sku_barcode", "sku_hlc"} <= _indexes(path)
    reopened.close()
    other = SkuReplica(str(tmp_path / "other.sqlite"))
    other.apply(_bulk(BULK_FILL))
    assert not other.indexed
    other.apply(_bulk(1, BULK_FILL))  # a price change after the fill
    assert other.indexed and other.max_hlc() == pack(T, BULK_FILL) and len(other) == BULK_FILL + 1
