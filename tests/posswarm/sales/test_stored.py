"""The stored form of a sale: its own format number, every known format reads, unknown ones are refused clearly."""

import dataclasses

import msgpack
import pytest

from posswarm.sales import stored
from posswarm.sales.model import InvalidSale, Line, Sale, Tender

SALE = Sale("till-1", "ab" * 16, 7, 1_700_000_000_000, (Line("SKU1", 2, 150), Line("SKU2", -1, 99)), 201,
            (Tender("card", 201),))  # fmt: skip
FIELDS = ["till-1", "ab" * 16, 7, 1_700_000_000_000, [["SKU1", 2, 150], ["SKU2", -1, 99]], 201, [["card", 201]]]


def test_a_sale_without_a_txn_is_written_as_format_1_so_a_rolled_back_node_reads_it():
    body = stored.pack(SALE)
    assert msgpack.unpackb(body) == [1, *FIELDS]
    assert stored.unpack(body) == SALE


def test_a_sale_with_a_txn_is_format_2():
    sale = dataclasses.replace(SALE, txn="POS-0042-000917")
    body = stored.pack(sale)
    assert msgpack.unpackb(body) == [2, *FIELDS, "POS-0042-000917"]
    assert stored.unpack(body) == sale and stored.unpack(body).txn == "POS-0042-000917"


def test_format_0_rows_written_before_numbering_still_read():
    assert stored.unpack(msgpack.packb(FIELDS)) == SALE


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (msgpack.packb([stored.FORMAT + 1, *FIELDS, "new"]), "row format 3 is not one this posswarm reads"),
        (b"\xc1not msgpack", "not msgpack"),
        (msgpack.packb({"device_id": "till-1"}), "not a list"),
        (msgpack.packb([1, *FIELDS[:-1]]), "row has 6 fields, format 1 needs 7"),
        (msgpack.packb([2, *FIELDS]), "row has 7 fields, format 2 needs 8"),
        (msgpack.packb([1, *FIELDS[:5], 999, FIELDS[6]]), "not the sum of its lines"),
        (msgpack.packb([2, *FIELDS, "has space"]), "transaction id"),
    ],
)
def test_a_row_this_code_cannot_read_is_a_one_line_error(body, message):
    with pytest.raises(InvalidSale, match=message):
        stored.unpack(body)


def test_a_row_body_is_byte_for_byte_what_lists_of_fields_pack_to():
    # Lines and tenders are tuples in memory; the stored bytes must not depend on that.
    fields = [SALE.device_id, SALE.incarnation, SALE.seq, SALE.created_ms,
              [[line.sku, line.qty, line.unit_cents] for line in SALE.lines], SALE.total_cents,
              [[tender.kind, tender.cents] for tender in SALE.tenders]]
    assert stored.pack(SALE) == msgpack.packb([1, *fields])
