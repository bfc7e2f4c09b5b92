"""The store cache's sales ledger: idempotent store, contiguous high-water marks, per-day SKU totals."""

from __future__ import annotations

import datetime
import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass

from posswarm.errors import PosswarmError
from posswarm.sales import marks, stored
from posswarm.sales.model import Sale
from posswarm.sqlite_file import open_db, transaction

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sale (
    device_id TEXT NOT NULL,
    incarnation TEXT NOT NULL,
    seq INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    total_cents INTEGER NOT NULL,
    body BLOB NOT NULL,
    forwarded INTEGER NOT NULL DEFAULT 0,
    stored_ms INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (device_id, incarnation, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sale_unforwarded ON sale(device_id, incarnation, seq) WHERE forwarded = 0;
-- Durable per-device high-water mark, kept forever: O(devices) state, unlike a time-window dedupe.
CREATE TABLE IF NOT EXISTS hwm (
    device_id TEXT NOT NULL,
    incarnation TEXT NOT NULL,
    hwm INTEGER NOT NULL,
    PRIMARY KEY (device_id, incarnation)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sku_day (
    day TEXT NOT NULL,
    sku TEXT NOT NULL,
    qty INTEGER NOT NULL,
    cents INTEGER NOT NULL,
    PRIMARY KEY (day, sku)
) WITHOUT ROWID;
"""

DeviceKey = tuple[str, str]
"""``(device_id, incarnation)``: one till's run of sequence numbers."""


@dataclass(frozen=True, slots=True)
class Totals:
    """What the ledger holds: sale count, cents, and per ``(day, sku)`` ``(qty, cents)``."""

    sales: int
    cents: int
    by_day_sku: dict[tuple[str, str], tuple[int, int]]


class Ledger:
    """Every sale the store's devices made, each stored exactly once however often it arrives.

    ``timezone`` (IANA name) decides which trading day a sale counts toward. Not thread-safe:
    the trio driver serialises calls.
    """

    def __init__(self, path: str, *, timezone: str = "UTC") -> None:
        try:
            self._zone = zoneinfo.ZoneInfo(timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise PosswarmError(
                f"sales ledger {path}: unknown timezone {timezone!r}; use an IANA name such as 'Europe/London'"
            ) from None
        self.path = path
        self._what = f"sales ledger {path}"
        self._db = open_db(path, "sales ledger", _SCHEMA)

    def close(self) -> None:
        self._db.close()

    def _day(self, created_ms: int) -> str:
        return datetime.datetime.fromtimestamp(created_ms / 1000, self._zone).date().isoformat()

    def store(self, sales: Iterable[Sale], *, now_ms: int = 0) -> dict[DeviceKey, int]:
        """Store ``sales`` (duplicates ignored), commit, return each touched device's high-water mark.

        The mark is the highest seq such that 1..seq are all stored: a gap holds it back, so a
        device acked up to it can still resend the missing sale. Devices whose sales were all
        duplicates are included too: their ack was probably lost.
        ``now_ms`` is kept with each newly stored sale (``stored_ms``): till-to-ledger latency for the benchmarks.
        """
        touched: set[DeviceKey] = set()
        with transaction(self._db, self._what) as db:
            for sale in sales:
                touched.add((sale.device_id, sale.incarnation))
                inserted = db.execute(
                    "INSERT OR IGNORE INTO sale (device_id, incarnation, seq, created_ms, total_cents, body, stored_ms)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (*sale.key, sale.created_ms, sale.total_cents, stored.pack(sale), now_ms),
                ).rowcount
                if inserted:
                    self._count(db, sale)
            return {device: self._advance(db, device) for device in sorted(touched)}

    def _count(self, db, sale: Sale) -> None:
        day = self._day(sale.created_ms)
        db.executemany(
            "INSERT INTO sku_day VALUES (?, ?, ?, ?)"
            " ON CONFLICT DO UPDATE SET qty = qty + excluded.qty, cents = cents + excluded.cents",
            [(day, line.sku, line.qty, line.cents) for line in sale.lines],
        )

    def _advance(self, db, device: DeviceKey) -> int:
        row = db.execute("SELECT hwm FROM hwm WHERE device_id = ? AND incarnation = ?", device).fetchone()
        start = row[0] if row else 0
        above = db.execute(
            "SELECT seq FROM sale WHERE device_id = ? AND incarnation = ? AND seq > ? ORDER BY seq", (*device, start)
        )
        hwm = marks.advance(start, (seq for (seq,) in above))
        if hwm != start or row is None:
            db.execute("INSERT OR REPLACE INTO hwm VALUES (?, ?, ?)", (*device, hwm))
        return hwm

    def hwms(self) -> dict[DeviceKey, int]:
        """Every device's high-water mark: the body of a SalesDigest."""
        return {(d, i): h for d, i, h in self._db.execute("SELECT device_id, incarnation, hwm FROM hwm")}

    def unforwarded(self, limit: int = 500) -> list[Sale]:
        """Sales central has not confirmed yet, in per-device seq order."""
        rows = self._db.execute(
            "SELECT body FROM sale WHERE forwarded = 0 ORDER BY device_id, incarnation, seq LIMIT ?", (limit,)
        )
        return [stored.unpack(body) for (body,) in rows]

    def unforwarded_count(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM sale WHERE forwarded = 0").fetchone()[0]

    def mark_forwarded(self, keys: Iterable[tuple[str, str, int]]) -> int:
        """Central stored these ``(device_id, incarnation, seq)``; return how many were newly marked."""
        with transaction(self._db, self._what) as db:
            marked = 0
            for key in keys:
                marked += db.execute(
                    "UPDATE sale SET forwarded = 1 WHERE device_id = ? AND incarnation = ? AND seq = ?"
                    " AND forwarded = 0",
                    tuple(key),
                ).rowcount
            return marked

    def totals(self) -> Totals:
        sales, cents = self._db.execute("SELECT COUNT(*), COALESCE(SUM(total_cents), 0) FROM sale").fetchone()
        by_day_sku = {(day, sku): (qty, c) for day, sku, qty, c in self._db.execute("SELECT * FROM sku_day")}
        return Totals(sales=sales, cents=cents, by_day_sku=by_day_sku)
