"""The chaos verdict: central's exported sales against the POS's own record, by POS transaction id (pure)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import NamedTuple

EXAMPLES = 5  # ids named in the verdict per kind of fault, enough to start looking


class Attempted(NamedTuple):
    """What the POS knows of one transaction: the till it rang on, its basket, whether a sale was confirmed."""

    till: str
    basket: Mapping  # {"lines": [{sku, qty, unit_cents}], "tenders": [{kind, cents}]}, as sent
    acknowledged: bool
    attempts: int


def fingerprint(till: object, basket: Mapping) -> tuple:
    """A basket as rung on a till; the simulated POS never rings the same one twice on a till."""
    return (till, _fields(basket.get("lines"), ("sku", "qty", "unit_cents")), _fields(basket.get("tenders"), ("kind", "cents")))


def _fields(items: object, names: tuple[str, ...]) -> tuple:
    # an export row is read, not trusted: a malformed one matches no basket and is counted phantom
    if not isinstance(items, list):
        return ()
    return tuple(tuple(item.get(n) for n in names) if isinstance(item, Mapping) else None for item in items)


def verdict(attempted: Mapping[str, Attempted], exported: Iterable[Mapping]) -> dict:
    """Compare by txn id; ``exported`` is central's JSONL export, one dict per stored sale.

    A stored sale without a known txn id (a build that dropped the key) is matched by its basket
    instead, so a transaction stored twice is caught under whatever identity it came back. lost: attempted and acknowledged, but not at central. duplicated: one txn stored more than
    once, under any identity. phantom: stored, but never attempted (or stored without a txn id).
    wrong_total: stored with another total than the POS rang up. in_doubt_stored: never
    acknowledged (the POS gave up or the till died for good) yet at central once; not a fault,
    but the POS must learn of it from the export.
    """
    by_basket = {fingerprint(a.till, a.basket): txn for txn, a in attempted.items()}
    stored = Counter()
    totals: dict[str, set[int]] = {}
    phantom, unkeyed = [], 0
    for row in exported:
        txn = row.get("txn")
        if txn not in attempted:
            unkeyed += 1
            txn = by_basket.get(fingerprint(row.get("device_id"), row))
        if txn is None:
            phantom.append(f"{row.get('device_id')}/{row.get('seq')}")
            continue
        stored[txn] += 1
        totals.setdefault(txn, set()).add(row.get("total_cents"))
    lost = sorted(t for t, a in attempted.items() if a.acknowledged and not stored[t])
    duplicated = sorted(t for t, n in stored.items() if n > 1)
    wrong = sorted(t for t, seen in totals.items() if seen != {_total(attempted[t].basket)})
    in_doubt = sorted(t for t, a in attempted.items() if not a.acknowledged and stored[t])
    return {
        "attempted": len(attempted),
        "acknowledged": sum(a.acknowledged for a in attempted.values()),
        "retried": sum(a.attempts > 1 for a in attempted.values()),
        "stored": sum(stored.values()) + len(phantom), "stored_without_txn": unkeyed,
        "lost": len(lost), "duplicated": len(duplicated), "phantom": len(phantom),
        "wrong_total": len(wrong), "in_doubt_stored": len(in_doubt),
        "examples": {k: v[:EXAMPLES] for k, v in
                     (("lost", lost), ("duplicated", duplicated), ("phantom", phantom), ("wrong_total", wrong)) if v},
    }


def exactly_once(result: Mapping) -> bool:
    """Nothing lost, nothing twice, nothing from nowhere, every amount as rung up."""
    return all(result[k] == 0 for k in ("lost", "duplicated", "phantom", "wrong_total"))


def _total(basket: Mapping) -> int:
    return sum(line["qty"] * line["unit_cents"] for line in basket["lines"])
