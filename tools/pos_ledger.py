"""The simulated POS's own durable record of every transaction it attempted, kept apart from posswarm's files.

The chaos verdict trusts only this file and central's export: each transaction is committed here
before its first request, and every attempt's outcome after it, so a till killed
mid-request, a timeout or a reset leaves a record that says "in doubt", never nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

from posswarm.sqlite_file import open_db, transaction
from tools.sales_verdict import Attempted

_SCHEMA = """
CREATE TABLE IF NOT EXISTS txn (
    txn TEXT PRIMARY KEY,
    till TEXT NOT NULL,
    basket TEXT NOT NULL,
    acknowledged INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS attempt (
    txn TEXT NOT NULL REFERENCES txn(txn),
    n INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    PRIMARY KEY (txn, n)
) WITHOUT ROWID;
"""

# The outcomes an attempt can have: an answer (the HTTP status) or why there was none.
ANSWERED = ("201", "200")


class PosLedger:
    """One SQLite file; not thread-safe (the POS driver runs its calls one at a time)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._what = f"POS ledger {path}"
        # WAL with synchronous=NORMAL survives the POS process being killed (what the chaos does to
        # processes); only a power cut of this machine could take the last commits, and an fsync per
        # write would make the ledger, not the store, the slowest part of the run.
        self._db = open_db(str(path), "POS ledger", _SCHEMA, synchronous="NORMAL")

    def close(self) -> None:
        self._db.close()

    def begin(self, txn: str, till: str, basket: dict) -> None:
        """Before the first request: from here on the transaction exists for the POS, answered or not."""
        with transaction(self._db, self._what) as db:
            db.execute("INSERT INTO txn (txn, till, basket) VALUES (?, ?, ?)", (txn, till, json.dumps(basket)))

    def attempt(self, txn: str, n: int, outcome: str) -> None:
        """Attempt ``n`` (1-based) ended with ``outcome``: an HTTP status, or timeout/connect/reset/..."""
        with transaction(self._db, self._what) as db:
            db.execute("INSERT INTO attempt VALUES (?, ?, ?)", (txn, n, outcome))
            if outcome in ANSWERED:
                db.execute("UPDATE txn SET acknowledged = 1 WHERE txn = ?", (txn,))

    def attempted(self) -> dict[str, Attempted]:
        """Every transaction the POS started: id -> what it knows about it."""
        tries = dict(self._db.execute("SELECT txn, COUNT(*) FROM attempt GROUP BY txn").fetchall())
        return {txn: Attempted(till, json.loads(basket), bool(acked), tries.get(txn, 0))
                for txn, till, basket, acked in self._db.execute("SELECT txn, till, basket, acknowledged FROM txn")}

    def outcomes(self) -> dict[str, int]:
        """How many attempts ended each way (``{"201": 880, "timeout": 12, ...}``)."""
        return dict(self._db.execute("SELECT outcome, COUNT(*) FROM attempt GROUP BY outcome ORDER BY outcome"))
