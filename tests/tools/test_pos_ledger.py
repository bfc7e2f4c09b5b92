"""The POS's own ledger (a real SQLite file) and the verdict that holds central's export against it."""

from __future__ import annotations

from tools.pos_ledger import PosLedger
from tools.sales_verdict import exactly_once, verdict


def _basket(sku: str, cents: int) -> dict:
    return {"lines": [{"sku": sku, "qty": 1, "unit_cents": cents}], "tenders": [{"kind": "cash", "cents": cents}]}


def _row(till: str, seq: int, basket: dict, txn: str | None) -> dict:
    total = sum(line["qty"] * line["unit_cents"] for line in basket["lines"])
    return {"store": "S1", "device_id": till, "incarnation": "ab" * 16, "seq": seq, "total_cents": total, **basket,
            "txn": txn}


def test_the_verdict_names_lost_duplicated_phantom_and_wrong_sales(tmp_path):
    ledger = PosLedger(tmp_path / "pos.sqlite")
    a, b, c, d = _basket("A", 100), _basket("B", 200), _basket("C", 300), _basket("D", 400)
    for txn, basket in (("t1", a), ("t2", b), ("t3", c), ("t4", d)):
        ledger.begin(txn, "till-01", basket)
    ledger.attempt("t1", 1, "timeout")
    ledger.attempt("t1", 2, "200")  # answered on the retry: acknowledged
    ledger.attempt("t2", 1, "201")
    ledger.attempt("t3", 1, "201")
    ledger.attempt("t4", 1, "reset")  # never answered: in doubt
    ledger.close()
    attempted = PosLedger(tmp_path / "pos.sqlite").attempted()  # what survives a restart of the POS
    assert attempted["t1"].acknowledged and attempted["t1"].attempts == 2 and not attempted["t4"].acknowledged

    clean = [_row("till-01", 1, a, "t1"), _row("till-01", 2, b, "t2"), _row("till-01", 3, c, "t3")]
    assert exactly_once(verdict(attempted, clean))
    assert verdict(attempted, clean)["in_doubt_stored"] == 0

    faulty = [
        _row("till-01", 1, a, "t1"),
        _row("till-01", 2, a, None),  # t1 again under a new identity, its key dropped on the way
        _row("till-01", 3, {**c, "lines": [{"sku": "C", "qty": 2, "unit_cents": 300}]}, "t3"),
        _row("till-01", 4, _basket("Z", 900), None),  # nobody rang this
        _row("till-01", 5, d, "t4"),  # in doubt, yet stored once: fine
    ]
    found = verdict(attempted, faulty)
    assert (found["lost"], found["duplicated"], found["phantom"], found["wrong_total"]) == (1, 1, 1, 1), found
    assert found["examples"] == {"lost": ["t2"], "duplicated": ["t1"], "phantom": ["till-01/4"], "wrong_total": ["t3"]}
    assert found["in_doubt_stored"] == 1 and found["stored_without_txn"] == 2 and not exactly_once(found)
