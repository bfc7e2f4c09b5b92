"""The till's durable sales outbox: commit before printing, resend until the cache acks."""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

from posswarm.errors import PosswarmError
from posswarm.sales import marks, stored
from posswarm.sales.model import Sale, parse_lines, parse_tenders
from posswarm.sqlite_file import open_db, transaction

_SCHEMA = """
CREATE TABLE IF NOT EXISTS identity (
    device_id TEXT NOT NULL,
    incarnation TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sale (
    seq INTEGER PRIMARY KEY,
    body BLOB NOT NULL,
    acked INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS sale_unacked ON sale(seq) WHERE acked = 0;
-- The POS's transaction ids (Idempotency-Key), committed with their sale: a retry finds its sale.
CREATE TABLE IF NOT EXISTS txn (
    txn TEXT PRIMARY KEY,
    seq INTEGER NOT NULL
) WITHOUT ROWID;
-- Other devices' sales we carry for them until the cache has them (store-and-forward).
CREATE TABLE IF NOT EXISTS replica (
    device_id TEXT NOT NULL,
    incarnation TEXT NOT NULL,
    seq INTEGER NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (device_id, incarnation, seq)
) WITHOUT ROWID;
-- The cache's ack per foreign device, so a late gossip copy of an acked sale is not held again.
CREATE TABLE IF NOT EXISTS replica_acked (
    device_id TEXT NOT NULL,
    incarnation TEXT NOT NULL,
    hwm INTEGER NOT NULL,
    PRIMARY KEY (device_id, incarnation)
) WITHOUT ROWID;
"""


class Recorded(NamedTuple):
    """What :meth:`Outbox.record` did: the sale, and whether it was an earlier one under the same txn id."""

    sale: Sale
    repeat: bool


class TxnConflict(PosswarmError):
    """A transaction id already recorded with a different basket or payment."""


class Outbox:
    """A device's sales, each committed (fsync) in one transaction before anyone sees it.

    The identity ``(device_id, incarnation, seq)`` is minted inside that transaction:
    the incarnation when the file is created, seq = max + 1. Not thread-safe: the trio
    driver serialises calls (a ``trio.Lock`` around ``to_thread.run_sync``).
    """

    def __init__(self, path: str, device_id: str) -> None:
        self.path = path
        self._what = f"sales outbox {path}"
        self._db = open_db(path, "sales outbox", _SCHEMA)
        with transaction(self._db, self._what):
            row = self._db.execute("SELECT device_id, incarnation FROM identity").fetchone()
            if row is None:
                row = (device_id, secrets.token_hex(16))
                self._db.execute("INSERT INTO identity VALUES (?, ?)", row)
        if row[0] != device_id:
            self._db.close()
            raise PosswarmError(
                f"sales outbox {path}: belongs to device {row[0]!r}, not {device_id!r};"
                " fix device_id in the config (its unsent sales must keep their identity)"
            )
        self.device_id: str = row[0]
        self.incarnation: str = row[1]

    def close(self) -> None:
        self._db.close()

    def record(self, lines: Sequence[tuple[str, int, int]], tenders: Sequence[tuple[str, int]], now_ms: int,
               txn: str | None = None) -> Recorded:
        """Commit a new sale and return it (``repeat`` False); only after this returns may the receipt print.

        With the POS's transaction id ``txn``, a sale already recorded under it is returned instead
        (``repeat`` True) if its lines and tenders are the same, and :class:`TxnConflict` is
        raised if they differ: a retry after a crash or a lost answer never charges twice.
        """
        parsed_lines = parse_lines(lines)
        parsed_tenders = parse_tenders(tenders)
        with transaction(self._db, self._what):
            if txn is not None:
                row = self._db.execute(
                    "SELECT sale.body FROM txn JOIN sale USING (seq) WHERE txn.txn = ?", (txn,)
                ).fetchone()
                if row is not None:
                    original = stored.unpack(row[0])
                    if (original.lines, original.tenders) != (parsed_lines, parsed_tenders):
                        raise TxnConflict(
                            f"sale txn {txn!r}: already recorded as sale {original.seq} with other lines or"
                            " tenders; a new sale needs a new transaction id"
                        )
                    return Recorded(original, True)
            (seq,) = self._db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM sale").fetchone()
            sale = Sale(
                device_id=self.device_id,
                incarnation=self.incarnation,
                seq=seq,
                created_ms=now_ms,
                lines=parsed_lines,
                total_cents=sum(line.cents for line in parsed_lines),
                tenders=parsed_tenders,
                txn=txn,
            )
            self._db.execute("INSERT INTO sale (seq, body) VALUES (?, ?)", (seq, stored.pack(sale)))
            if txn is not None:
                self._db.execute("INSERT INTO txn VALUES (?, ?)", (txn, seq))
        return Recorded(sale, False)

    def last(self) -> Sale | None:
        """The newest committed sale: reprint it after a crash, never charge again."""
        row = self._db.execute("SELECT body FROM sale ORDER BY seq DESC LIMIT 1").fetchone()
        return stored.unpack(row[0]) if row else None

    def unacked(self, limit: int = 64, *, after: int = 0) -> list[Sale]:
        """Oldest un-acked sales with seq > ``after`` first (the cache's hwm only moves over a contiguous run)."""
        rows = self._db.execute(
            "SELECT body FROM sale WHERE acked = 0 AND seq > ? ORDER BY seq LIMIT ?", (after, limit)
        )
        return [stored.unpack(body) for (body,) in rows]

    def hold_replica(self, sales: Iterable[Sale]) -> int:
        """Keep copies of other devices' sales until the cache acks them; return how many are new."""
        held = 0
        with transaction(self._db, self._what) as db:
            for sale in sales:
                if sale.device_id == self.device_id and sale.incarnation == self.incarnation:
                    continue
                if marks.covers(self._replica_mark(db, sale.device_id, sale.incarnation), sale.seq):
                    continue  # a late gossip copy of a sale the cache already has
                held += db.execute(
                    "INSERT OR IGNORE INTO replica VALUES (?, ?, ?, ?)",
                    (sale.device_id, sale.incarnation, sale.seq, stored.pack(sale)),
                ).rowcount
        return held

    @staticmethod
    def _replica_mark(db, device_id: str, incarnation: str) -> int | None:
        row = db.execute(
            "SELECT hwm FROM replica_acked WHERE device_id = ? AND incarnation = ?", (device_id, incarnation)
        ).fetchone()
        return row[0] if row else None

    def replicas_unacked(self, limit: int = 64) -> list[Sale]:
        """Held copies of other devices' sales, oldest seq first per device."""
        rows = self._db.execute(
            "SELECT body FROM replica ORDER BY device_id, incarnation, seq LIMIT ?", (limit,)
        )
        return [stored.unpack(body) for (body,) in rows]

    def settle(self, hwms: Mapping[tuple[str, str], int]) -> tuple[int, int]:
        """Apply a cache digest (or one ack) in one transaction; return (own sales newly acked, carried copies dropped).

        A mark says every seq up to it is stored, hence the ``seq <= mark`` ranges below.
        A mark for another incarnation of this till (before it was re-imaged) is ignored.
        """
        with transaction(self._db, self._what) as db:
            own = dropped = 0
            mine = hwms.get((self.device_id, self.incarnation))
            if mine:
                own = db.execute("UPDATE sale SET acked = 1 WHERE seq <= ? AND acked = 0", (mine,)).rowcount
            for device, incarnation in db.execute("SELECT DISTINCT device_id, incarnation FROM replica").fetchall():
                offered = hwms.get((device, incarnation))
                if not offered:
                    continue
                mark = marks.later(self._replica_mark(db, device, incarnation), offered)
                db.execute("INSERT OR REPLACE INTO replica_acked VALUES (?, ?, ?)", (device, incarnation, mark))
                dropped += db.execute(
                    "DELETE FROM replica WHERE device_id = ? AND incarnation = ? AND seq <= ?",
                    (device, incarnation, mark),
                ).rowcount
            return own, dropped

    def counts(self) -> dict[str, int]:
        """Committed, still un-acked, and carried-for-others sale counts (for status)."""
        committed, unacked = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(acked = 0), 0) FROM sale"
        ).fetchone()
        (carried,) = self._db.execute("SELECT COUNT(*) FROM replica").fetchone()
        return {"committed": committed, "unacked": unacked, "carried": carried}
