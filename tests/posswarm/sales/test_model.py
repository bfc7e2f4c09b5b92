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


def test_a_line_must_be_a_line_not_any_tuple():
    with pytest.raises(InvalidSale, match="SKU code"):
        _sale(lines=(("SKU1", 2, 150), Line("SKU2", -1, 100)))


@pytest.mark.parametrize(
    ("lines", "tenders"),
    [
        ([["SKU1", 1, 1, 9]], [["cash", 1]]),  # a line of four fields
        ([["SKU1", 1, 1]], [["cash", 1, 0]]),  # a tender of three
        ([("SKU1", 1, 1), "SKU"], [["cash", 1]]),  # a line that is no list
        ([["SKU1", 1, 1]], "cash"),
    ],
)
def test_lines_and_tenders_of_the_wrong_shape_are_refused_from_the_wire(lines, tenders):
    with pytest.raises(InvalidSale, match="fields|list of at most"):
        Sale.from_wire(["till-1", INC, 1, 0, lines, 1, tenders])


def test_a_wire_sale_is_validated_as_a_built_one_is():
    with pytest.raises(InvalidSale, match="tenders pay 2 but the total is 1"):
        Sale.from_wire(["till-1", INC, 1, 0, [["SKU1", 1, 1]], 1, [["cash", 2]]])
    with pytest.raises(InvalidSale, match="SKU code"):
        Sale.from_wire(["till-1", INC, 1, 0, [["\ud800", 1, 1]], 1, [["cash", 1]]])  # a lone surrogate
    assert Sale.from_wire(["till-1", INC, 1, 0, [["Kaffee \u00e9", 1, 1]], 1, [["cash", 1]]]).lines[0].cents == 1
