"""Sale validation: every broken rule is an InvalidSale naming the sale; the wire form round-trips."""

import pytest

from posswarm.sales.model import InvalidSale, Line, Sale, Tender

INC = "0f" * 16


def _sale(**changes):
    fields = dict(device_id="till-1", incarnation=INC, seq=1, created_ms=1_700_000_000_000,
                  lines=(Line("SKU1", 2, 150), Line("SKU2", -1, 100)), total_cents=200,
                  tenders=(Tender("cash", 500), Tender("change", -300)))  # fmt: skip
    fields.update(changes)
    return Sale(**fields)


def test_a_valid_sale_round_trips_its_wire_form():
    sale = _sale()
    assert Sale.from_wire(sale.to_wire()) == sale
    assert sale.key == ("till-1", INC, 1)


@pytest.mark.parametrize(
    ("changes", "complaint"),
    [
        ({"device_id": ""}, "device_id"),
        ({"incarnation": "NOT-HEX"}, "incarnation"),
        ({"seq": 0}, "seq"),
        ({"seq": True}, "seq"),
        ({"created_ms": -1}, "created_ms"),
        ({"lines": ()}, "1-1000 lines"),
        ({"lines": (Line("SKU1", 0, 150),), "total_cents": 0, "tenders": ()}, "non-zero"),
        ({"lines": (Line("SKU1", 1, -5),), "total_cents": -5, "tenders": (Tender("cash", -5),)}, "unit price"),
        ({"lines": (Line("", 1, 5),), "total_cents": 5, "tenders": (Tender("cash", 5),)}, "SKU code"),
        ({"total_cents": 201}, "not the sum"),
        ({"tenders": (Tender("cash", 200), Tender("card", 1))}, "tenders pay 201"),
        ({"tenders": (Tender("", 200),)}, "kind"),
    ],
)
def test_broken_rules_are_named(changes, complaint):
    with pytest.raises(InvalidSale, match=complaint) as caught:
        _sale(**changes)
    assert "till-1" in str(caught.value) or "''" in str(caught.value)


@pytest.mark.parametrize(
    "wire",
    [
        None,
        [],
        ["till-1", INC, 1, 0, "lines", 0, []],
        ["till-1", INC, 1, 0, [["SKU1", 1]], 0, []],
        ["till-1", INC, 1, 0, [["SKU1", 1, 1]], 1, [["cash"]]],
        ["till-1", INC, 1, 0, [[None, 1, 1]], 1, [["cash", 1]]],
    ],
)
def test_malformed_wire_forms_are_invalid_sales(wire):
    with pytest.raises(InvalidSale):
        Sale.from_wire(wire)
