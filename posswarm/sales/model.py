"""The Sale record: identity minted on the till, lines, tenders, and its validation."""

from __future__ import annotations

import re
from dataclasses import dataclass

from posswarm.errors import PosswarmError

# Cents and quantities stay inside the range every hop represents exactly
# (SQLite INTEGER, msgpack int, a JSON number at central).
MAX_ABS = 2**53
MAX_LINES = 1000
MAX_TENDERS = 16
_INCARNATION = re.compile(r"[0-9a-f]{8,64}")
# The POS's transaction id (the local API's Idempotency-Key): visible ASCII, as HTTP headers carry it.
TXN = re.compile(r"[\x21-\x7e]{1,64}")


class InvalidSale(PosswarmError):
    """A sale that breaks a rule (bad identity, totals that do not add up, bad field)."""


@dataclass(frozen=True, slots=True)
class Line:
    """One basket line: ``qty`` of ``sku`` at ``unit_cents`` each (negative qty = a return)."""

    sku: str
    qty: int
    unit_cents: int

    @property
    def cents(self) -> int:
        return self.qty * self.unit_cents


@dataclass(frozen=True, slots=True)
class Tender:
    """How part of the sale was paid: ``kind`` (cash, card, voucher...) and the cents it covered."""

    kind: str
    cents: int


@dataclass(frozen=True, slots=True)
class Sale:
    """A committed sale. ``(device_id, incarnation, seq)`` is its identity at every hop.

    ``incarnation`` is random hex minted when the device's outbox database is created, so a
    re-imaged till that starts again at seq 1 never collides with its earlier sales.
    ``txn`` is the POS's own transaction id when it gave one: it travels with the sale to central.
    """

    device_id: str
    incarnation: str
    seq: int
    created_ms: int
    lines: tuple[Line, ...]
    total_cents: int
    tenders: tuple[Tender, ...]
    txn: str | None = None

    def __post_init__(self) -> None:
        validate(self)

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.device_id, self.incarnation, self.seq)

    def to_wire(self) -> list:
        """Positional msgpack-ready form (half the size of a map, measured 148 B for 3 lines).

        7 items, or 8 with a ``txn``: a sale without one still reaches nodes of the version before txn ids.
        """
        wire = [
            self.device_id,
            self.incarnation,
            self.seq,
            self.created_ms,
            [[line.sku, line.qty, line.unit_cents] for line in self.lines],
            self.total_cents,
            [[tender.kind, tender.cents] for tender in self.tenders],
        ]
        return wire if self.txn is None else [*wire, self.txn]

    def to_json(self) -> dict:
        """The sale as the local API answers it and central exports it."""
        return {
            "device_id": self.device_id, "incarnation": self.incarnation, "seq": self.seq,
            "created_ms": self.created_ms, "total_cents": self.total_cents,
            "lines": [{"sku": line.sku, "qty": line.qty, "unit_cents": line.unit_cents} for line in self.lines],
            "tenders": [{"kind": tender.kind, "cents": tender.cents} for tender in self.tenders],
            "txn": self.txn,
        }

    @classmethod
    def from_wire(cls, wire: object) -> Sale:
        """Rebuild from :meth:`to_wire` output; anything malformed raises :class:`InvalidSale`."""
        if not isinstance(wire, (list, tuple)) or len(wire) not in (7, 8):
            raise InvalidSale("sale: wire form is not a 7- or 8-item list (sender on a different posswarm version?)")
        return cls.from_fields(*wire)

    @classmethod
    def from_fields(cls, device_id, incarnation, seq, created_ms, lines, total_cents, tenders, txn=None) -> Sale:
        """Build from plain values, ``lines`` as ``[[sku, qty, unit_cents]]`` and ``tenders`` as ``[[kind, cents]]``.

        Both the wire form and the stored form (:mod:`posswarm.sales.stored`) end here, so a sale
        read from either is checked by the same rules.
        """
        who = f"sale {device_id!r:.70}/{seq!r:.20}"
        return cls(
            device_id, incarnation, seq, created_ms, parse_lines(lines, who), total_cents, parse_tenders(tenders, who),
            txn,
        )


def parse_lines(lines: object, who: str = "sale") -> tuple[Line, ...]:
    """``[(sku, qty, unit_cents), ...]`` as Lines; a wrong shape raises :class:`InvalidSale`."""
    return _parse(Line, lines, MAX_LINES, who)


def parse_tenders(tenders: object, who: str = "sale") -> tuple[Tender, ...]:
    """``[(kind, cents), ...]`` as Tenders; a wrong shape raises :class:`InvalidSale`."""
    return _parse(Tender, tenders, MAX_TENDERS, who)


def _parse(kind: type, items: object, most: int, who: str) -> tuple:
    name = kind.__name__.lower()
    if not isinstance(items, (list, tuple)) or len(items) > most:
        raise InvalidSale(f"{who}: {name}s must be a list of at most {most} (corrupt sender?)")
    width = len(kind.__slots__)
    if not all(isinstance(item, (list, tuple)) and len(item) == width for item in items):
        raise InvalidSale(f"{who}: every {name} needs exactly {width} fields (corrupt sender?)")
    return tuple(kind(*item) for item in items)


def _is_int(value: object, low: int, high: int) -> bool:
    # bool is an int subclass; True is never a quantity.
    return type(value) is int and low <= value <= high


def _is_name(value: object, longest: int) -> bool:
    # Lone surrogates cannot be stored or sent (UTF-8), so they are refused here, not at the socket.
    if not isinstance(value, str) or not 0 < len(value) <= longest:
        return False
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def validate(sale: Sale) -> None:
    """Raise :class:`InvalidSale` naming the first rule ``sale`` breaks."""
    who = f"sale {sale.device_id!r:.70}/{sale.seq!r:.20}"
    if not _is_name(sale.device_id, 64):
        raise InvalidSale(f"{who}: device_id must be 1-64 characters (check the device's config)")
    if not isinstance(sale.incarnation, str) or not _INCARNATION.fullmatch(sale.incarnation):
        raise InvalidSale(f"{who}: incarnation must be 8-64 lowercase hex digits (corrupt outbox?)")
    if not _is_int(sale.seq, 1, MAX_ABS):
        raise InvalidSale(f"{who}: seq must be a positive integer (corrupt outbox?)")
    if not _is_int(sale.created_ms, 0, 2**47):
        raise InvalidSale(f"{who}: created_ms must be a non-negative epoch millisecond count (check the clock)")
    if not sale.lines or len(sale.lines) > MAX_LINES:
        raise InvalidSale(f"{who}: a sale needs 1-{MAX_LINES} lines (empty basket?)")
    if len(sale.tenders) > MAX_TENDERS:
        raise InvalidSale(f"{who}: at most {MAX_TENDERS} tenders")
    for line in sale.lines:
        if not isinstance(line, Line) or not _is_name(line.sku, 64):
            raise InvalidSale(f"{who}: every line needs a SKU code of 1-64 characters")
        if not _is_int(line.qty, -MAX_ABS, MAX_ABS) or line.qty == 0:
            raise InvalidSale(f"{who}: line {line.sku!r} quantity must be a non-zero integer")
        if not _is_int(line.unit_cents, 0, MAX_ABS):
            raise InvalidSale(f"{who}: line {line.sku!r} unit price must be whole non-negative cents")
    for tender in sale.tenders:
        if not isinstance(tender, Tender) or not _is_name(tender.kind, 32):
            raise InvalidSale(f"{who}: every tender needs a kind of 1-32 characters")
        if not _is_int(tender.cents, -MAX_ABS, MAX_ABS):
            raise InvalidSale(f"{who}: tender {tender.kind!r} amount must be whole cents")
    if sale.txn is not None and not (isinstance(sale.txn, str) and TXN.fullmatch(sale.txn)):
        raise InvalidSale(f"{who}: transaction id must be 1-64 visible ASCII characters (no spaces)")
    expected = sum(line.cents for line in sale.lines)
    if not _is_int(sale.total_cents, -MAX_ABS, MAX_ABS) or sale.total_cents != expected:
        raise InvalidSale(f"{who}: total {sale.total_cents!r} is not the sum of its lines ({expected})")
    paid = sum(tender.cents for tender in sale.tenders)
    if paid != sale.total_cents:
        raise InvalidSale(
            f"{who}: tenders pay {paid} but the total is {sale.total_cents} (record change as a negative tender)"
        )
