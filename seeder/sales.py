"""Central's sales store: ingest from the store caches (idempotent on the sale's identity), export for the data platform.

SQLite by default; PostgreSQL (``postgresql://...``, psycopg 3) for a chain-wide deployment.
Both keep ``PRIMARY KEY (store, device_id, incarnation, seq)`` and insert-or-ignore, so a batch the
cache resends after a lost answer is counted once, and no store's cache can make another store's
sales look like duplicates. A table with the older key (no store) is migrated in place when opened.
Many batches share one transaction (:mod:`seeder.sales_writer`): into PostgreSQL in one ``COPY`` and one
``INSERT ... ON CONFLICT DO NOTHING``, not a round trip per sale.
Each stored sale gets a ``position`` that grows in commit order (:mod:`seeder.sales_stream` reads by it): assigned
inside the committing transaction, in PostgreSQL under a transaction-scoped advisory lock that every seeder sharing
the database takes, so no sale can commit below a position a reader has already passed.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Protocol

import msgpack
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from posswarm import logs
from posswarm.errors import PosswarmError
from posswarm.identity.revocations import RevokedNodes
from posswarm.operator_gate import OperatorGate
from posswarm.sales import batch_signature, stored
from posswarm.sales.model import InvalidSale, Sale
from posswarm.sqlite_file import open_db, transaction
from posswarm.wallclock import now_ms
from seeder import postgres
from seeder.bounded_body import BodyRefused, read_bounded
from seeder.postgres import redact as _redact
from seeder.sales_summary import IngestSummary
from seeder.sales_writer import SalesWriter

log = logs.get("seeder.sales")

MAX_BODY = 8 << 20  # a batch of 500 sales is ~150 KB; far above it is not a cache talking
_COLUMNS = "store, device_id, incarnation, seq, created_ms, total_cents, received_ms, body"

_SQLITE_TABLE = """
CREATE TABLE IF NOT EXISTS {name} (
    store TEXT NOT NULL,
    device_id TEXT NOT NULL,
    incarnation TEXT NOT NULL,
    seq INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    total_cents INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    body BLOB NOT NULL,
    position INTEGER,
    PRIMARY KEY (store, device_id, incarnation, seq)
) WITHOUT ROWID;
"""
_SQLITE_SCHEMA = _SQLITE_TABLE.format(name="sale")
SALE_KEY = ("store", "device_id", "incarnation", "seq")

_POSTGRES_SCHEMA = """
CREATE TABLE IF NOT EXISTS sale (
    store TEXT NOT NULL,
    device_id TEXT NOT NULL,
    incarnation TEXT NOT NULL,
    seq BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    total_cents BIGINT NOT NULL,
    received_ms BIGINT NOT NULL,
    body BYTEA NOT NULL,
    position BIGINT NOT NULL,
    PRIMARY KEY (store, device_id, incarnation, seq)
)
"""
# The rows of one transaction, copied in before they are inserted (a temporary table: this connection's own).
_POSTGRES_INCOMING = (f"CREATE TEMPORARY TABLE IF NOT EXISTS sale_incoming ON COMMIT DELETE ROWS AS SELECT {_COLUMNS} "
                      "FROM sale WITH NO DATA")
# Held from a writer's first look at MAX(position) to its commit, by every seeder on the database: a sequence value
# taken by a transaction that commits after a later one would land below a position a reader already passed.
POSITION_LOCK = 0x706F_7373_7361_6C65  # "posssale"
_KEY_MATCH = " AND ".join(f"{{a}}.{column} = {{b}}.{column}" for column in SALE_KEY)
# Sales stored before positions existed, numbered in the order they were received (ties in key order).
_NUMBER_UNPOSITIONED = (
    f"UPDATE sale SET position = base.top + numbered.n FROM (SELECT COALESCE(MAX(position), 0) AS top FROM sale) AS base, "
    f"(SELECT {', '.join(SALE_KEY)}, row_number() OVER (ORDER BY received_ms, {', '.join(SALE_KEY)}) AS n FROM sale "
    f"WHERE position IS NULL) AS numbered WHERE {_KEY_MATCH.format(a='sale', b='numbered')}")
_POSITION_INDEX = "CREATE UNIQUE INDEX IF NOT EXISTS sale_position ON sale (position)"
_AFTER = "SELECT position, store, body FROM sale WHERE position > {p} ORDER BY position LIMIT {p}"
_POSTGRES_TYPES = ["text", "text", "text", "int8", "int8", "int8", "int8", "bytea"]
_POSTGRES_KEY = """
SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
WHERE i.indrelid = 'sale'::regclass AND i.indisprimary
"""


Batches = Sequence[tuple[str, Sequence[Sale]]]  # (store, its sales), in the order they arrived


class SalesStore(Protocol):
    def ingest(self, store: str, sales: Iterable[Sale]) -> tuple[int, int]: ...
    def ingest_many(self, batches: Batches) -> list[tuple[int, int]]: ...
    def rows(self) -> Iterator[tuple[str, Sale]]: ...
    def after(self, position: int, limit: int) -> tuple[list[tuple[int, str, Sale]], int]: ...
    def totals(self) -> tuple[int, int]: ...
    def close(self) -> None: ...


class SqliteSales:
    """One SQLite file (WAL, synchronous=FULL): enough for a region or a pilot."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._db = open_db(path, "central sales", _SQLITE_SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        """A table keyed without the store (older posswarm) gets the store into its key, in one transaction."""
        columns = self._db.execute("PRAGMA table_info(sale)").fetchall()  # (cid, name, type, notnull, default, pk)
        if tuple(c[1] for c in sorted((c for c in columns if c[5]), key=lambda c: c[5])) != SALE_KEY:
            self._migrate_key()
        self._migrate_position()

    def _migrate_key(self) -> None:
        with transaction(self._db, f"central sales {self.path}: adding the store to the sale key") as db:
            db.execute(_SQLITE_TABLE.format(name="sale_keyed"))
            db.execute(f"INSERT INTO sale_keyed ({_COLUMNS}) SELECT {_COLUMNS} FROM sale")
            db.execute("DROP TABLE sale")
            db.execute("ALTER TABLE sale_keyed RENAME TO sale")
        log.info("sales.migrated", db=self.path, key=",".join(SALE_KEY))

    def _migrate_position(self) -> None:
        """Sales stored before positions existed (or by the key migration) are numbered, in one transaction."""
        if (self._db.execute("SELECT 1 FROM sqlite_master WHERE name = 'sale_position'").fetchone()
                and not self._db.execute("SELECT 1 FROM sale WHERE position IS NULL LIMIT 1").fetchone()):
            return  # numbered already: an export opening the file takes no write lock
        with transaction(self._db, f"central sales {self.path}: numbering sales for the stream") as db:
            if "position" not in {c[1] for c in db.execute("PRAGMA table_info(sale)")}:
                db.execute("ALTER TABLE sale ADD COLUMN position INTEGER")
            db.execute(_POSITION_INDEX)
            numbered = db.execute(_NUMBER_UNPOSITIONED).rowcount
        if numbered:
            log.info("sales.migrated", db=self.path, numbered=numbered)

    def ingest(self, store: str, sales: Iterable[Sale]) -> tuple[int, int]:
        """Store ``sales`` from ``store``; return (newly stored, duplicates ignored)."""
        return self.ingest_many([(store, list(sales))])[0]

    def ingest_many(self, batches: Batches) -> list[tuple[int, int]]:
        """Every batch in one transaction; (newly stored, duplicates ignored) for each, in order."""
        now = now_ms()
        counts = []
        with transaction(self._db, f"central sales {self.path}") as db:
            for store, sales in batches:
                # One writer at a time holds the file (BEGIN IMMEDIATE): MAX + 1 is in commit order. Only a repeated
                # sale is ignored: a position taken twice fails the transaction.
                added = db.executemany(f"INSERT INTO sale ({_COLUMNS}, position) VALUES (?, ?, ?, ?, ?, ?, ?, ?, "
                                       "(SELECT COALESCE(MAX(position), 0) + 1 FROM sale)) "
                                       f"ON CONFLICT ({', '.join(SALE_KEY)}) DO NOTHING",
                                       [_row(store, sale, now) for sale in sales]).rowcount
                counts.append((added, len(sales) - added))
        return counts

    def rows(self) -> Iterator[tuple[str, Sale]]:
        for store, body in self._db.execute("SELECT store, body FROM sale ORDER BY store, device_id, incarnation, seq"):
            yield store, stored.unpack(body)

    def after(self, position: int, limit: int) -> tuple[list[tuple[int, str, Sale]], int]:
        """Up to ``limit`` sales with a position above ``position``, in position order; and the highest position."""
        rows = self._db.execute(_AFTER.format(p="?"), (position, limit)).fetchall()
        (top,) = self._db.execute("SELECT COALESCE(MAX(position), 0) FROM sale").fetchone()
        return [(at, store, stored.unpack(body)) for at, store, body in rows], top

    def totals(self) -> tuple[int, int]:
        return tuple(self._db.execute("SELECT COUNT(*), COALESCE(SUM(total_cents), 0) FROM sale").fetchone())

    def close(self) -> None:
        self._db.close()


class PostgresSales:
    """A PostgreSQL table shared by every seeder of the chain."""

    def __init__(self, dsn: str) -> None:
        self._psycopg = psycopg = postgres.psycopg_module("sales db")
        self._db = postgres.connect(dsn, "sales db", autocommit=False)
        try:
            with self._db.transaction():
                self._db.execute("SELECT pg_advisory_xact_lock(%s)", (POSITION_LOCK,))  # seeders starting together
                self._db.execute(_POSTGRES_SCHEMA)
                key = {row[0] for row in self._db.execute(_POSTGRES_KEY)}
                if key != set(SALE_KEY):  # keyed without the store (older posswarm): migrate in place
                    (name,) = self._db.execute("SELECT conname FROM pg_constraint WHERE conrelid = 'sale'::regclass "
                                               "AND contype = 'p'").fetchone()
                    self._db.execute(f'ALTER TABLE sale DROP CONSTRAINT "{name}", '
                                     f'ADD PRIMARY KEY ({", ".join(SALE_KEY)})')
                    log.info("sales.migrated", db=_redact(dsn), key=",".join(SALE_KEY))
                if not self._db.execute("SELECT 1 FROM information_schema.columns WHERE table_schema = "
                                        "current_schema() AND table_name = 'sale' AND column_name = 'position'"
                                        ).fetchone():
                    self._db.execute("ALTER TABLE sale ADD COLUMN position BIGINT")
                    numbered = self._db.execute(_NUMBER_UNPOSITIONED).rowcount
                    self._db.execute("ALTER TABLE sale ALTER COLUMN position SET NOT NULL")
                    log.info("sales.migrated", db=_redact(dsn), numbered=numbered)
                if not self._db.execute("SELECT 1 FROM pg_indexes WHERE schemaname = current_schema() AND "
                                        "indexname = 'sale_position'").fetchone():
                    self._db.execute(_POSITION_INDEX)  # only then: it locks out the other seeders' writes meanwhile
                self._db.execute(_POSTGRES_INCOMING)
        except psycopg.Error as exc:
            raise PosswarmError(f"sales db {_redact(dsn)}: {postgres.first_line(exc)}; check the URL and server") from None

    def ingest(self, store: str, sales: Iterable[Sale]) -> tuple[int, int]:
        return self.ingest_many([(store, list(sales))])[0]

    def ingest_many(self, batches: Batches) -> list[tuple[int, int]]:
        """Every batch in one transaction, three round trips whatever their size; counts as :class:`SqliteSales`."""
        now = now_ms()
        first: dict[tuple, int] = {}  # sale key -> the batch that brought it first (a later one brought a repeat)
        rows = []
        for index, (store, sales) in enumerate(batches):
            for sale in sales:
                if (key := (store, *sale.key)) not in first:
                    first[key] = index
                    rows.append(_row(store, sale, now))
        added = [0] * len(batches)
        try:
            with self._db.transaction(), self._db.cursor() as cur:
                with cur.copy(f"COPY sale_incoming ({_COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
                    copy.set_types(_POSTGRES_TYPES)
                    for row in rows:
                        copy.write_row(row)
                # Its own statement: the INSERT's snapshot, taken after the lock, sees the previous holder's commit.
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (POSITION_LOCK,))
                cur.execute(f"INSERT INTO sale ({_COLUMNS}, position) SELECT {_COLUMNS}, (SELECT COALESCE(MAX(position), "
                            "0) FROM sale) + row_number() OVER () FROM sale_incoming AS i WHERE NOT EXISTS (SELECT 1 "
                            f"FROM sale AS s WHERE {_KEY_MATCH.format(a='s', b='i')}) "
                            # as in SQLite: a position taken twice fails the transaction, never passes as a repeat
                            f"ON CONFLICT ({', '.join(SALE_KEY)}) DO NOTHING RETURNING {', '.join(SALE_KEY)}")
                for key in cur:
                    added[first[tuple(key)]] += 1
        except self._psycopg.Error as exc:
            raise PosswarmError(f"central sales (postgresql): write failed ({exc}); the cache will retry") from None
        return [(new, len(sales) - new) for new, (_, sales) in zip(added, batches, strict=True)]

    def rows(self) -> Iterator[tuple[str, Sale]]:
        with self._db.cursor() as cur:
            cur.execute("SELECT store, body FROM sale ORDER BY store, device_id, incarnation, seq")
            for store, body in cur:
                yield store, stored.unpack(bytes(body))
        self._db.rollback()

    def after(self, position: int, limit: int) -> tuple[list[tuple[int, str, Sale]], int]:
        try:
            rows = self._db.execute(_AFTER.format(p="%s"), (position, limit)).fetchall()
            (top,) = self._db.execute("SELECT COALESCE(MAX(position), 0) FROM sale").fetchone()
        except self._psycopg.Error as exc:
            raise PosswarmError(f"central sales (postgresql): read failed ({exc}); retry the page") from None
        finally:
            self._db.rollback()
        return [(int(at), store, stored.unpack(bytes(body))) for at, store, body in rows], int(top)

    def totals(self) -> tuple[int, int]:
        row = self._db.execute("SELECT COUNT(*), COALESCE(SUM(total_cents), 0) FROM sale").fetchone()
        self._db.rollback()
        return int(row[0]), int(row[1])

    def close(self) -> None:
        self._db.close()


def _row(store: str, sale: Sale, now: int) -> tuple:
    return (store, *sale.key, sale.created_ms, sale.total_cents, now, stored.pack(sale))


def open_sales(url: str) -> SalesStore:
    """``postgresql://...`` (or ``postgres://``) or a SQLite path (``sqlite:///path`` or just ``path``)."""
    if postgres.is_url(url):
        return PostgresSales(url)
    path = postgres.sqlite_path(url)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return SqliteSales(path)


def sale_record(store: str, sale: Sale) -> dict:
    """The export form of one sale (one JSON line)."""
    return {"store": store, **sale.to_json()}


# txn last: a column added at the end keeps every earlier column where readers expect it.
CSV_HEADER = ["store", "device_id", "incarnation", "seq", "created_ms", "sale_total_cents",
              "line", "sku", "qty", "unit_cents", "line_cents", "txn"]


def export(store: SalesStore, out: IO[str], fmt: str) -> int:
    """Write every sale as JSONL (one sale per line) or CSV (one basket line per row); return the sale count."""
    count = 0
    if fmt == "jsonl":
        for shop, sale in store.rows():
            out.write(json.dumps(sale_record(shop, sale), separators=(",", ":")) + "\n")
            count += 1
    elif fmt == "csv":
        writer = csv.writer(out)
        writer.writerow(CSV_HEADER)
        for shop, sale in store.rows():
            for number, line in enumerate(sale.lines, 1):
                writer.writerow([shop, sale.device_id, sale.incarnation, sale.seq, sale.created_ms, sale.total_cents,
                                 number, line.sku, line.qty, line.unit_cents, line.cents, sale.txn or ""])
            count += 1
    else:
        raise PosswarmError(f"sales export: unknown format {fmt!r}; use jsonl or csv")
    return count


def operator_gate(token: str | None) -> OperatorGate:
    """The gate on central's operator endpoints: shut without a token (sales totals are the retailer's revenue)."""
    return OperatorGate(
        token, as_json=True,
        off="operator endpoints are off on this seeder (start `posswarm-seeder serve` with --operator-token-file)",
        fix="Authorization: Bearer ...; `posswarm-seeder sales totals --operator-token-file` sends it",
        challenge='Bearer realm="posswarm central"')


def parse_batch(body: bytes) -> list[Sale]:
    """The sales of a batch's body (a msgpack list of wire forms); InvalidSale, ValueError or TypeError if not.

    Its own function so the wire lists die here: kept while the batch waited for its commit, the cycle collector
    walked them again and again (17.9 % of central's samples at 10,000 sales/s; ~0.45 s -> ~0.18 s of a run)."""
    wires = msgpack.unpackb(body, raw=False)
    if not isinstance(wires, list):
        raise InvalidSale("body is not a list of sales")
    return [Sale.from_wire(wire) for wire in wires]


def routes(writer: SalesWriter, authorities: Callable[[], list[Ed25519PublicKey]], operator: OperatorGate,
           revoked: RevokedNodes | None = None) -> list[Route]:
    """``POST /sales/ingest?store=S042`` (a msgpack list of sales, signed by that store's enrolled cache, checked
    against the enrolment keys ``authorities()`` of central's own root of trust) and ``GET /sales/totals`` (for
    whoever holds the operator token). ``writer`` must be running: it answers a batch once it is committed."""
    known = batch_signature.VerifiedCertificates()
    summary = IngestSummary()

    async def ingest(request: Request) -> Response:
        shop = request.query_params.get("store", "")
        if not shop or len(shop) > 64:
            return JSONResponse({"error": "sales ingest: ?store=STORE_ID is required"}, 400)
        try:  # who sent it, from the headers alone; then the body, bounded, and the signature over it
            sender = batch_signature.check_sender(request.headers, shop, authorities(), now_ms=now_ms(),
                                                  revoked=revoked, known=known)
            body = await read_bounded(request, MAX_BODY, f"sales ingest from {shop}")
            batch_signature.check_signature(sender, shop, body)
        except (batch_signature.BatchRefused, BodyRefused) as exc:
            log.warning("sales.refused", store=shop, client=request.client.host if request.client else "",
                        reason=str(exc))
            return JSONResponse({"error": str(exc)}, exc.status)
        try:
            sales = parse_batch(body)
        except (InvalidSale, ValueError, TypeError, msgpack.UnpackException) as exc:
            log.warning("sales.rejected", store=shop, reason=str(exc))
            return JSONResponse({"error": f"sales ingest from {shop}: {exc}"}, 400)
        try:
            added, duplicates = await writer.ingest(shop, sales)
        except PosswarmError as exc:  # logged by the writer
            return JSONResponse({"error": str(exc)}, 503)
        log.debug("sales.ingested", store=shop, cache=sender.identity.node_id, stored=added, duplicates=duplicates)
        summary.count(shop, added, duplicates)
        return JSONResponse({"stored": added, "duplicates": duplicates})

    async def totals(request: Request) -> Response:
        if (refused := operator.refusal(request, "sales totals")) is not None:
            return refused
        count, cents = await writer.totals()
        return JSONResponse({"sales": count, "cents": cents})

    return [Route("/sales/ingest", ingest, methods=["POST"]), Route("/sales/totals", totals)]
