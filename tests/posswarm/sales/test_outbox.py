"""Device outbox: contiguous seqs, durable across reopen, acks, and replicas held for other tills."""

import sqlite3

import msgpack
import pytest

from posswarm.errors import PosswarmError
from posswarm.sales.model import InvalidSale, Line, Sale, Tender
from posswarm.sales.outbox import Outbox, TxnConflict


def _sell(outbox, n, now_ms=1_700_000_000_000):
    return [outbox.record([("SKU1", 1, 100 + i)], [("cash", 100 + i)], now_ms + i).sale for i in range(n)]


def test_seqs_are_contiguous_and_survive_reopen(tmp_path):
    path = str(tmp_path / "outbox.db")
    outbox = Outbox(path, "till-1")
    first = _sell(outbox, 3)
    incarnation = outbox.incarnation
    outbox.close()

    outbox = Outbox(path, "till-1")
    assert outbox.incarnation == incarnation
    later = _sell(outbox, 2)
    assert [s.seq for s in first + later] == [1, 2, 3, 4, 5]
    assert outbox.unacked() == first + later
    assert outbox.last() == later[-1]
    # Committed means on disk: a second, independent connection sees every row.
    assert sqlite3.connect(path).execute("SELECT COUNT(*) FROM sale").fetchone() == (5,)
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_a_new_database_is_a_new_incarnation(tmp_path):
    a = Outbox(str(tmp_path / "a.db"), "till-1")
    b = Outbox(str(tmp_path / "b.db"), "till-1")
    assert a.incarnation != b.incarnation
    assert _sell(a, 1)[0].key != _sell(b, 1)[0].key


def test_a_digest_acks_up_to_the_mark_and_ignores_other_incarnations():
    outbox = Outbox(":memory:", "till-1")
    sales = _sell(outbox, 5)
    assert outbox.settle({("till-1", "ff" * 16): 5}) == (0, 0)
    assert outbox.settle({("till-1", outbox.incarnation): 3}) == (3, 0)
    assert outbox.settle({("till-1", outbox.incarnation): 3}) == (0, 0)
    assert outbox.unacked() == sales[3:]
    assert outbox.unacked(limit=1) == sales[3:4]
    assert outbox.counts() == {"committed": 5, "unacked": 2, "carried": 0}


def test_invalid_sale_commits_nothing_and_uses_no_seq():
    outbox = Outbox(":memory:", "till-1")
    with pytest.raises(InvalidSale, match="tenders pay"):
        outbox.record([("SKU1", 1, 100)], [("cash", 50)], 0)
    with pytest.raises(InvalidSale, match="3 fields"):
        outbox.record([("SKU1", 1)], [], 0)
    assert outbox.last() is None
    assert _sell(outbox, 1)[0].seq == 1


def _foreign(device, incarnation, seq):
    return Sale(device, incarnation, seq, 0, (Line("SKU9", 1, 10),), 10, (Tender("card", 10),))


def test_replicas_are_held_until_the_cache_acks_them():
    outbox = Outbox(":memory:", "till-1")
    own = _sell(outbox, 1)[0]
    theirs = [_foreign("till-2", "aa" * 16, seq) for seq in (1, 2, 3)]
    assert outbox.hold_replica(theirs + [own]) == 3  # our own sale is never a replica
    assert outbox.hold_replica(theirs) == 0
    assert outbox.replicas_unacked() == theirs
    assert outbox.settle({("till-2", "aa" * 16): 2}) == (0, 2)
    assert outbox.replicas_unacked() == theirs[2:]
    # A late, older mark never brings a dropped copy's mark back.
    assert outbox.settle({("till-2", "aa" * 16): 1}) == (0, 0)
    # A late gossip copy of an already-acked sale is not held again.
    assert outbox.hold_replica(theirs[:1]) == 0
    assert outbox.replicas_unacked() == theirs[2:]


def test_someone_elses_outbox_is_refused(tmp_path):
    path = str(tmp_path / "outbox.db")
    Outbox(path, "till-1").close()
    with pytest.raises(PosswarmError, match="belongs to device 'till-1'"):
        Outbox(path, "till-2")


def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path):
    path = tmp_path / "outbox.db"
    path.write_bytes(b"this is a receipt, not a database" * 100)
    with pytest.raises(PosswarmError, match="move it aside"):
        Outbox(str(path), "till-1")


def test_a_row_written_before_storage_formats_were_numbered_still_reads(tmp_path):
    """Format 0 rows (the bare wire list) stay readable next to new rows: no migration is needed."""
    path = str(tmp_path / "outbox.db")
    outbox = Outbox(path, "till-1")
    legacy = Sale("till-1", outbox.incarnation, 1, 1_700_000_000_000, (Line("SKU1", 2, 150),), 300,
                  (Tender("card", 300),))  # fmt: skip
    outbox.close()
    db = sqlite3.connect(path)
    db.execute("INSERT INTO sale (seq, body) VALUES (1, ?)", (msgpack.packb(_legacy_row(legacy)),))
    db.commit()
    db.close()
    outbox = Outbox(path, "till-1")
    assert outbox.last() == legacy
    later = _sell(outbox, 1)[0]
    assert later.seq == 2
    assert outbox.unacked() == [legacy, later]


def _legacy_row(sale):
    """The row body posswarm 2026.11 wrote (the bare wire list), spelled out rather than via to_wire."""
    return [sale.device_id, sale.incarnation, sale.seq, sale.created_ms,
            [[line.sku, line.qty, line.unit_cents] for line in sale.lines], sale.total_cents,
            [[tender.kind, tender.cents] for tender in sale.tenders]]  # fmt: skip


def test_a_txn_id_records_the_sale_once_across_retries_and_reopen(tmp_path):
    path = str(tmp_path / "outbox.db")
    outbox = Outbox(path, "till-1")
    first = outbox.record([("SKU1", 2, 150)], [("card", 300)], 1_000, txn="POS7-000123")
    assert first.repeat is False and first.sale.txn == "POS7-000123" and first.sale.seq == 1
    again = outbox.record([("SKU1", 2, 150)], [("card", 300)], 2_000, txn="POS7-000123")
    assert again == (first.sale, True)  # the original, its time included, not a second sale
    outbox.close()
    outbox = Outbox(path, "till-1")  # a crash or restart keeps the promise: it is in the same file
    assert outbox.record([("SKU1", 2, 150)], [("card", 300)], 3_000, txn="POS7-000123") == (first.sale, True)
    with pytest.raises(TxnConflict, match="'POS7-000123': already recorded as sale 1 with other lines or tenders"):
        outbox.record([("SKU1", 3, 150)], [("card", 450)], 4_000, txn="POS7-000123")
    assert outbox.record([("SKU1", 2, 150)], [("card", 300)], 5_000).sale.seq == 2  # no key: a new sale
    assert outbox.record([("SKU1", 2, 150)], [("card", 300)], 6_000, txn="POS7-000124").sale.seq == 3
    assert outbox.counts()["committed"] == 3


def test_a_bad_txn_id_commits_nothing():
    outbox = Outbox(":memory:", "till-1")
    with pytest.raises(InvalidSale, match="transaction id"):
        outbox.record([("SKU1", 1, 100)], [("cash", 100)], 0, txn="has a space")
    assert outbox.last() is None
