"""Cache ledger: each sale once whatever the delivery order, contiguous hwm, aggregates that add up."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from posswarm.errors import PosswarmError
from posswarm.sales.ledger import Ledger
from posswarm.sales.model import Line, Sale, Tender

INC = {"till-1": "11" * 16, "till-2": "22" * 16}
DAY_MS = 86_400_000
T0 = 1_700_000_000_000 - 1_700_000_000_000 % DAY_MS  # midnight UTC


def _sale(device, seq, *, day=0, sku="SKU1", qty=1, cents=100):
    return Sale(device, INC[device], seq, T0 + day * DAY_MS + seq, (Line(sku, qty, cents),), qty * cents,
                (Tender("cash", qty * cents),))  # fmt: skip


def test_hwm_is_held_back_by_a_gap_until_it_fills():
    ledger = Ledger(":memory:")
    key = ("till-1", INC["till-1"])
    assert ledger.store([_sale("till-1", 1), _sale("till-1", 2), _sale("till-1", 4)]) == {key: 2}
    assert ledger.store([_sale("till-1", 5)]) == {key: 2}
    assert ledger.store([_sale("till-1", 3)]) == {key: 5}
    assert ledger.hwms() == {key: 5}


def test_a_first_sale_missing_gives_hwm_zero_and_duplicates_are_still_acked():
    ledger = Ledger(":memory:")
    key = ("till-2", INC["till-2"])
    assert ledger.store([_sale("till-2", 2)]) == {key: 0}
    ledger.store([_sale("till-2", 1)])
    assert ledger.store([_sale("till-2", 1)]) == {key: 2}  # all duplicates: the ack was lost, resend it


def test_aggregates_per_day_and_sku_count_each_sale_once():
    ledger = Ledger(":memory:")
    batch = [_sale("till-1", 1, sku="A", qty=2, cents=150), _sale("till-1", 2, day=1, sku="A"),
             _sale("till-2", 1, sku="A", qty=-1, cents=150), _sale("till-2", 2, sku="B", cents=99)]  # fmt: skip
    ledger.store(batch)
    ledger.store(batch)
    day0, day1 = "2023-11-14", "2023-11-15"
    totals = ledger.totals()
    assert totals.sales == 4
    assert totals.cents == 300 + 100 - 150 + 99
    assert totals.by_day_sku == {(day0, "A"): (1, 150), (day1, "A"): (1, 100), (day0, "B"): (1, 99)}


def test_trading_day_follows_the_store_timezone():
    late_evening_utc = T0 - 3_600_000 + 1  # 23:00 UTC the day before = next morning in Tokyo
    sale = Sale("till-1", INC["till-1"], 1, late_evening_utc, (Line("A", 1, 5),), 5, (Tender("cash", 5),))
    utc, tokyo = Ledger(":memory:"), Ledger(":memory:", timezone="Asia/Tokyo")
    utc.store([sale])
    tokyo.store([sale])
    assert list(utc.totals().by_day_sku) == [("2023-11-13", "A")]
    assert list(tokyo.totals().by_day_sku) == [("2023-11-14", "A")]
    with pytest.raises(PosswarmError, match="IANA"):
        Ledger(":memory:", timezone="Mars/Olympus")


def test_forwarding_to_central_and_reopen(tmp_path):
    path = str(tmp_path / "ledger.db")
    ledger = Ledger(path)
    sales = [_sale("till-1", seq) for seq in (1, 2, 3)] + [_sale("till-2", 1)]
    ledger.store(sales)
    assert ledger.unforwarded() == sales
    assert ledger.mark_forwarded([s.key for s in sales[:2]]) == 2
    assert ledger.mark_forwarded([sales[0].key]) == 0
    ledger.close()
    ledger = Ledger(path)
    assert ledger.unforwarded(limit=1) == sales[2:3]
    assert ledger.unforwarded() == sales[2:]
    assert ledger.hwms() == {("till-1", INC["till-1"]): 3, ("till-2", INC["till-2"]): 1}


@st.composite
def deliveries(draw):
    """Every sale of two tills, plus duplicates, shuffled and cut into batches."""
    counts = {device: draw(st.integers(1, 12)) for device in INC}
    sales = [_sale(d, seq, day=seq % 2, sku=f"S{seq % 3}", qty=draw(st.integers(-3, 5).filter(bool)),
                   cents=draw(st.integers(0, 999))) for d, n in counts.items() for seq in range(1, n + 1)]  # fmt: skip
    copies = sales + draw(st.lists(st.sampled_from(sales), max_size=30))
    shuffled = draw(st.permutations(copies))
    cuts = sorted(draw(st.lists(st.integers(0, len(shuffled)), max_size=6)))
    batches = [shuffled[a:b] for a, b in zip([0, *cuts], [*cuts, len(shuffled)])]
    return sales, batches


@settings(max_examples=60, deadline=None)
@given(deliveries())
def test_any_interleaving_of_duplicates_and_reorders_stores_each_sale_once(case):
    sales, batches = case
    ledger = Ledger(":memory:")
    hwm = {}
    for batch in batches:
        for key, mark in ledger.store(batch).items():
            assert mark >= hwm.get(key, 0)  # an ack never goes backwards
            hwm[key] = mark
    totals = ledger.totals()
    assert totals.sales == len(sales)
    assert totals.cents == sum(s.total_cents for s in sales)
    expected: dict = {}
    for sale in sales:
        for line in sale.lines:
            key = (ledger._day(sale.created_ms), line.sku)
            qty, cents = expected.get(key, (0, 0))
            expected[key] = (qty + line.qty, cents + line.cents)
    assert totals.by_day_sku == expected
    assert ledger.hwms() == {(d, INC[d]): max(s.seq for s in sales if s.device_id == d) for d in INC}
    assert sorted(s.key for s in ledger.unforwarded(limit=10_000)) == sorted(s.key for s in sales)
