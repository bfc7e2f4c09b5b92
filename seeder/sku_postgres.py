"""Central's SKU catalog in PostgreSQL, shared by the seeders of a chain (``--sku-db postgresql://...``).

One stamp order: every transaction that stamps (an import, the signer re-stamping what it signs) holds an advisory
transaction lock from its look at the newest stamp to its commit, so no two writers stamp from the same stale newest
stamp and no stamp commits below one a cache's cursor has passed. One signer: a seeder signs only while its signing
connection holds a session advisory lock; the other seeder's signer waits, and takes over once PostgreSQL frees the
lock with the first one's connection. The newest signed catalog snapshot is kept beside the entries, so a seeder that
did not sign it serves it with its pages too. Same interface as :class:`seeder.sku.CentralCatalog`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from posswarm import logs
from posswarm.errors import PosswarmError
from posswarm.keys import key_id
from posswarm.sku import snapshot
from posswarm.sku.bucket import BUCKETS
from posswarm.sku.entry import SkuEntry
from posswarm.sku.hlc import Clock
from posswarm.sku.snapshot import Snapshot
from seeder import postgres, sku_import
from seeder.sku import PAGE, SIGN_BATCH

log = logs.get("seeder")

STAMP_LOCK = 0x706F_7373_736B_7573  # "possskus": held by every stamping transaction, on every seeder and the CLI
SIGNER_LOCK = 0x706F_7373_7369_676E  # "posssign": held by the signing seeder's connection for as long as it signs
# The signing connection's server side: a seeder host lost without closing its connection (power, network) frees
# the signer's turn after 10 + 3 x 5 s of silence instead of the kernel's two hours.
_SIGNER_OPTIONS = "-c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 -c tcp_keepalives_count=3"

# code in byte order (COLLATE "C"), as SQLite and Python compare it: the snapshot's bucket digests hash the leaves in
# code order, and a till checks them in Python's order, whatever the database's locale.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS sku (
    code TEXT COLLATE "C" PRIMARY KEY,
    bucket INTEGER NOT NULL,
    hlc BIGINT NOT NULL,
    origin TEXT NOT NULL,
    deleted BOOLEAN NOT NULL,
    barcode TEXT NOT NULL,
    name TEXT NOT NULL,
    price_cents BIGINT NOT NULL,
    tax_class TEXT NOT NULL,
    leaf BYTEA NOT NULL,
    key_id TEXT NOT NULL,
    signature BYTEA NOT NULL
);
CREATE INDEX IF NOT EXISTS sku_hlc ON sku (hlc, code);
CREATE INDEX IF NOT EXISTS sku_bucket_code ON sku (bucket, code);
CREATE TABLE IF NOT EXISTS sku_snapshot (
    one BOOLEAN PRIMARY KEY DEFAULT true CHECK (one),
    watermark BIGINT NOT NULL,
    key_id TEXT NOT NULL,
    wire BYTEA NOT NULL
);
"""
_COLUMNS = "code, hlc, origin, deleted, barcode, name, price_cents, tax_class, key_id, signature"
_ROW = "code, bucket, hlc, origin, deleted, barcode, name, price_cents, tax_class, leaf, key_id, signature"
_TYPES = ["text", "int4", "int8", "text", "bool", "text", "text", "int8", "text", "bytea", "text", "bytea"]
_INCOMING = f"CREATE TEMPORARY TABLE IF NOT EXISTS sku_incoming ON COMMIT DELETE ROWS AS SELECT {_ROW} FROM sku WITH NO DATA"
_UPSERT = (f"INSERT INTO sku ({_ROW}) SELECT {_ROW} FROM sku_incoming ON CONFLICT (code) DO UPDATE SET "
           + ", ".join(f"{c} = EXCLUDED.{c}" for c in _ROW.split(", ")[1:]))
_SIGNED = "signature <> ''::bytea"
_NEWEST_SIGNED = f"SELECT hlc FROM sku WHERE {_SIGNED} ORDER BY hlc DESC LIMIT 1"
# Never back: a snapshot is stored only over an older one (or one of the same watermark: a new key's).
_KEEP_SNAPSHOT = ("INSERT INTO sku_snapshot (one, watermark, key_id, wire) VALUES (true, %s, %s, %s) ON CONFLICT (one) "
                  "DO UPDATE SET watermark = EXCLUDED.watermark, key_id = EXCLUDED.key_id, wire = EXCLUDED.wire "
                  "WHERE sku_snapshot.watermark <= EXCLUDED.watermark")
# The stored snapshot only when it is not the one held: a page's look at it is a row of three small columns.
_NEWER_SNAPSHOT = ("SELECT CASE WHEN watermark = %s AND key_id = %s THEN NULL ELSE wire END FROM sku_snapshot")


def _wire(row: tuple) -> list:
    code, hlc, origin, deleted, barcode, name, price, tax, kid, signature = row
    return [code, hlc, origin, bool(deleted), barcode, name, price, tax, kid, bytes(signature)]


def _row(entry: SkuEntry) -> tuple:
    return (entry.code, entry.bucket, entry.hlc, entry.origin, entry.deleted, entry.barcode, entry.name,
            entry.price_cents, entry.tax_class, entry.leaf, entry.key_id, entry.signature)


class PostgresCatalog:
    """The chain's catalog in one PostgreSQL database: every seeder serves it, one signs it, the CLI imports into it.

    Two connections: the routes' and the import's (one statement at a time, under :attr:`lock`), and the signer's,
    which holds the signer's turn (:meth:`take_signer_turn`)."""

    def __init__(self, dsn: str) -> None:
        self._psycopg = postgres.psycopg_module("sku db")
        self.dsn, self._where = dsn, f"sku db {postgres.redact(dsn)}"
        self.lock = trio.Lock()
        self.signing_lock = trio.Lock()  # the signer's own connection: signing never holds the routes up
        self.snapshot: Snapshot | None = None  # the newest signed catalog snapshot, served with every page
        self._db = self._signer = None
        self._turn = False
        with self._using(self._routes(), "creating its tables") as db, db.transaction():
            db.execute("SELECT pg_advisory_xact_lock(%s)", (STAMP_LOCK,))  # seeders starting together
            db.execute(_SCHEMA)
            self._take_stored_snapshot(db)

    def close(self) -> None:
        for db in (self._db, self._signer):
            if db is not None:
                db.close()
        self._turn = False

    def _connect(self, **options):
        return postgres.connect(self.dsn, "sku db", autocommit=True, **options)

    def _routes(self):
        if self._db is None or self._db.closed:  # lost with the server (restart, failover): connect again
            self._db = self._connect()
        return self._db

    def _signing(self):
        if not self._turn or self._signer is None or self._signer.closed:
            self._turn = False
            raise PosswarmError(f"{self._where}: this seeder does not hold the signer's turn (lost with its "
                                "connection); it waits for the turn again")
        return self._signer

    @contextmanager
    def _using(self, db, what: str) -> Iterator:
        try:
            yield db
        except self._psycopg.Error as exc:
            raise PosswarmError(f"{self._where}: {what} failed ({postgres.first_line(exc)}); retried, check the "
                                "server") from None

    @staticmethod
    def _stamp_clock(db) -> Clock:
        """The writers' clock over the newest stamp held, the stamp lock held until this transaction ends."""
        db.execute("SELECT pg_advisory_xact_lock(%s)", (STAMP_LOCK,))
        # Its own statement after the lock: under READ COMMITTED it sees the previous holder's commit.
        return Clock(db.execute("SELECT COALESCE(MAX(hlc), 0) FROM sku").fetchone()[0])

    @staticmethod
    def _entries(db, where: str, params: tuple) -> list[SkuEntry]:
        return [SkuEntry(*_wire(row)) for row in db.execute(f"SELECT {_COLUMNS} FROM sku {where}", params)]

    @staticmethod
    def _write(db, entries: list[SkuEntry]) -> None:
        if not entries:
            return
        db.execute(_INCOMING)
        with db.cursor() as cur:
            with cur.copy(f"COPY sku_incoming ({_ROW}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(_TYPES)
                for entry in entries:
                    copy.write_row(_row(entry))
            # Central's stamps only grow, so what a writer stamps under the lock replaces what is held.
            cur.execute(_UPSERT)

    def import_rows(self, rows: list[dict], *, replace: bool = False, now_ms: int | None = None) -> dict:
        """As :meth:`seeder.sku.CentralCatalog.import_rows`, in one transaction under the stamp lock."""
        wall = int(time.time() * 1000) if now_ms is None else now_ms
        with self._using(self._routes(), "importing the catalog") as db, db.transaction():
            clock = self._stamp_clock(db)
            codes = [row["code"] for row in rows if row["code"]]
            held = {entry.code: entry for entry in self._entries(db, "WHERE code = ANY(%s)", (codes,))}
            live = [code for (code,) in db.execute("SELECT code FROM sku WHERE NOT deleted")] if replace else None
            made, deleted = sku_import.changes(rows, held.get, live, clock, wall)
            self._write(db, made)
            (skus,) = db.execute("SELECT count(*) FROM sku").fetchone()
        return {"rows": len(rows), "changed": len(made), "tombstoned_missing": deleted, "skus": skus}

    def page(self, cursor: int, limit: int | None = None) -> dict:
        """As :meth:`seeder.sku.CentralCatalog.page`: the same cursor means the same thing on every seeder."""
        limit = PAGE if limit is None else limit
        with self._using(self._routes(), "reading changes") as db:
            self._take_stored_snapshot(db)
            rows = db.execute(f"SELECT {_COLUMNS} FROM sku WHERE hlc > %s AND {_SIGNED} ORDER BY hlc, code LIMIT %s",
                              (cursor, limit)).fetchall()
            if rows and len(rows) == limit:  # never part-way through a run of equal stamps
                rows += db.execute(f"SELECT {_COLUMNS} FROM sku WHERE hlc = %s AND code > %s AND {_SIGNED} ORDER BY "
                                   "code", (rows[-1][1], rows[-1][0])).fetchall()
        held = self.snapshot
        return {"entries": [_wire(row) for row in rows], "cursor": rows[-1][1] if rows else cursor,
                "more": len(rows) >= limit, "snapshot": held.to_wire() if held else None}

    def bucket_page(self, first: int, watermark: int, limit: int | None = None) -> dict:
        """As :meth:`seeder.sku.CentralCatalog.bucket_page`: whole buckets, the last one finished past ``limit``."""
        limit = PAGE if limit is None else limit
        signed = f"hlc <= %s AND {_SIGNED}"
        with self._using(self._routes(), "reading buckets") as db:
            rows = db.execute(f"SELECT {_COLUMNS}, bucket FROM sku WHERE bucket >= %s AND {signed} ORDER BY bucket, "
                              "code LIMIT %s", (first, watermark, limit)).fetchall()
            if len(rows) < limit:
                return {"entries": [_wire(row[:-1]) for row in rows], "next": None}
            last = rows[-1][-1]
            rows += db.execute(f"SELECT {_COLUMNS}, bucket FROM sku WHERE bucket = %s AND code > %s AND {signed} "
                               "ORDER BY code", (last, rows[-1][0], watermark)).fetchall()
        return {"entries": [_wire(row[:-1]) for row in rows], "next": last + 1 if last + 1 < BUCKETS else None}

    def newest_signed(self) -> int:
        """The newest stamp of a signed entry, whichever seeder signed it (0 before any)."""
        with self._using(self._routes(), "looking for changes") as db:
            row = db.execute(_NEWEST_SIGNED).fetchone()
        return row[0] if row else 0

    def take_signer_turn(self) -> bool:
        """Whether this seeder's signer may sign now: it holds the signer's lock, or just took it."""
        if self._turn and self._signer is not None and not self._signer.closed:
            return True
        try:
            if self._signer is None or self._signer.closed:
                self._signer = self._connect(options=_SIGNER_OPTIONS)
            with self._using(self._signer, "asking for the signer's turn") as db:
                self._turn = bool(db.execute("SELECT pg_try_advisory_lock(%s)", (SIGNER_LOCK,)).fetchone()[0])
                if self._turn:  # what the seeder that signed before stored, so it is not signed again at once
                    self._take_stored_snapshot(db)
        except PosswarmError as exc:
            log.warning("sku.signer_unreachable", reason=str(exc))
            return False
        return self._turn

    def drop_signer_turn(self) -> None:
        """Let the other seeder's signer take over: the lock goes with this connection."""
        if self._signer is not None:
            if self._turn and not self._signer.closed:
                try:  # at once: the closed connection's backend would free it only once it has noticed
                    self._signer.execute("SELECT pg_advisory_unlock(%s)", (SIGNER_LOCK,))
                except self._psycopg.Error:
                    pass  # lost with the connection anyway
            self._signer.close()
        self._signer, self._turn = None, False

    def sign_pending(self, key: Ed25519PrivateKey, *, after_hlc: int = 0, now_ms: int,
                     limit: int | None = None) -> tuple[int, int]:
        """As :meth:`seeder.sku.CentralCatalog.sign_pending`; only with the signer's turn held."""
        limit = SIGN_BATCH if limit is None else limit
        kid = key_id(key.public_key())
        with self._using(self._signing(), "signing") as db, db.transaction():
            clock = self._stamp_clock(db)
            pending = self._entries(db, "WHERE hlc > %s AND key_id <> %s ORDER BY hlc LIMIT %s", (after_hlc, kid, limit))
            fresh, after = sku_import.signed_anew(pending, key, kid, clock, now_ms, limit)
            self._write(db, fresh)
        return len(fresh), after

    def take_snapshot(self, key: Ed25519PrivateKey) -> Snapshot:
        """Sign a snapshot of every signed entry, read in one repeatable-read transaction and streamed (a server-side
        cursor), and store it for every seeder to serve; only with the signer's turn held."""
        with self._using(self._signing(), "taking the catalog snapshot") as db:
            with db.transaction():
                db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                row = db.execute(_NEWEST_SIGNED).fetchone()
                watermark = row[0] if row else 0
                with db.cursor(name="sku_leaves") as leaves:
                    leaves.itersize = 20_000
                    leaves.execute(f"SELECT bucket, leaf FROM sku WHERE hlc <= %s AND {_SIGNED} ORDER BY bucket, code",
                                   (watermark,))
                    made = snapshot.sign(snapshot.build(watermark, ((b, bytes(leaf)) for b, leaf in leaves)), key)
            db.execute(_KEEP_SNAPSHOT, (made.watermark, made.key_id, made.to_wire()))
        self._hold(made)
        return made

    def _take_stored_snapshot(self, db) -> None:
        held = self.snapshot
        row = db.execute(_NEWER_SNAPSHOT, (held.watermark if held else -1, held.key_id if held else "")).fetchone()
        if row is not None and row[0] is not None:
            # Bounded and checked in shape before it is served (from_wire); the caches check its signature.
            self._hold(Snapshot.from_wire(bytes(row[0])))

    def _hold(self, made: Snapshot) -> None:
        held = self.snapshot  # the signer's thread and the routes' both hold newer ones: never step back
        if held is None or made.watermark >= held.watermark:
            self.snapshot = made
