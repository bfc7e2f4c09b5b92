"""A node's SQLite-backed SKU catalog replica: LWW apply, lookup, bucket digests for anti-entropy."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

import blake3

from posswarm import logs
from posswarm.errors import PosswarmError
from posswarm.sku.bucket import BUCKETS, bucket_of  # noqa: F401 (re-exported: callers name the catalog)
from posswarm.sku.entry import SkuEntry, Version, wins
from posswarm.sku.hlc import MAX_SKEW_MS, Clock, unpack
from posswarm.sku.rows import HLC, Row
from posswarm.sku.unsynced_fill import UnsyncedFill
from posswarm.sqlite_file import open_db, transaction

log = logs.get("sku")

EMPTY_BUCKET = blake3.blake3(b"").digest(16)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sku (
    code TEXT PRIMARY KEY,
    bucket INTEGER NOT NULL,
    hlc INTEGER NOT NULL,
    origin TEXT NOT NULL,
    deleted INTEGER NOT NULL,
    barcode TEXT NOT NULL,
    name TEXT NOT NULL,
    price_cents INTEGER NOT NULL,
    tax_class TEXT NOT NULL,
    leaf BLOB NOT NULL,
    key_id TEXT NOT NULL DEFAULT '',
    signature BLOB NOT NULL DEFAULT x''
) WITHOUT ROWID;
-- Covering the leaf: re-hashing a bucket then reads the index alone, not a row per entry in code order.
CREATE INDEX IF NOT EXISTS sku_bucket_leaf ON sku(bucket, code, leaf);
DROP INDEX IF EXISTS sku_bucket;
CREATE TABLE IF NOT EXISTS cursor (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS bucket (
    bucket INTEGER PRIMARY KEY,
    digest BLOB NOT NULL
);
"""
# The lookup indexes (a barcode scan, the stamp order): an empty replica's bulk fill builds them after its last
# batch rather than entry by entry (1M SKUs in 50k batches, measured: 33.2 us an entry of SQLite's insert with
# them, 21.7 without and 1.8 to build them after). Opening a replica builds any left unbuilt (a crash mid-fill).
_LOOKUP_INDEXES = (
    "CREATE INDEX IF NOT EXISTS sku_barcode ON sku(barcode) WHERE barcode != ''",
    "CREATE INDEX IF NOT EXISTS sku_hlc ON sku(hlc, code)",
)
# A batch this large into a replica holding nothing is a bulk fill (a fresh till; the cache sends <= 50k a frame batch).
BULK_FILL = 10_000

_COLUMNS = "code, hlc, origin, deleted, barcode, name, price_cents, tax_class, key_id, signature"
_ROW = "code, bucket, hlc, origin, deleted, barcode, name, price_cents, tax_class, leaf, key_id, signature"
# Replicas written before entries were signed: their rows gain empty signatures (never served or
# passed on as central's; central stamps and signs its own anew).
_SIGNATURE_COLUMNS = ("ALTER TABLE sku ADD COLUMN key_id TEXT NOT NULL DEFAULT ''",
                      "ALTER TABLE sku ADD COLUMN signature BLOB NOT NULL DEFAULT x''")

_WRITE = """
INSERT OR REPLACE INTO sku (code, bucket, hlc, origin, deleted, barcode, name, price_cents, tax_class, leaf,
                            key_id, signature)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
Check = Callable[[list[SkuEntry]], list[SkuEntry]]
"""Which of the entries about to be merged may be (e.g. central's signature checked)."""

# Codes per version lookup: well under SQLite's host-parameter limit.
_LOOKUP = 500


def differing_buckets(mine: Sequence[bytes], theirs: Sequence[bytes]) -> list[int]:
    """The buckets two replicas must exchange, from their :meth:`SkuReplica.bucket_digests`."""
    if len(mine) != len(theirs):
        raise PosswarmError(
            f"sku digest: peer has {len(theirs)} buckets, we have {len(mine)}; upgrade the older node"
        )
    return [i for i, (a, b) in enumerate(zip(mine, theirs)) if a != b]


def _entry(row: tuple) -> SkuEntry:
    code, hlc, origin, deleted, barcode, name, price_cents, tax_class, kid, signature = row
    return SkuEntry(code, hlc, origin, bool(deleted), barcode, name, price_cents, tax_class, kid, bytes(signature))


class SkuReplica:
    """One node's copy of the catalog; replicas converge by exchanging differing buckets.

    Not thread-safe: the trio driver serialises calls.
    """

    def __init__(self, path: str, *, durable: bool = False, digests: bool = True) -> None:
        self.path = path
        self._what = f"sku replica {path}"
        self._synchronous = "FULL" if durable else "NORMAL"
        self._unsynced = UnsyncedFill(path) if path != ":memory:" else None
        if self._unsynced is not None:
            self._unsynced.restart_if_cut()
        # Not durable (synchronous=NORMAL) by default: a store replica that loses its last commits to
        # a power cut gets them back by anti-entropy, and 100k SKUs for a fresh till are many commits
        # (notes §2: 35k/s vs 2.4k/s). Central, the source of truth, passes durable=True.
        self._db = open_db(path, "sku replica", _SCHEMA + ";\n".join(_LOOKUP_INDEXES) + ";",
                           synchronous=self._synchronous)
        self.indexed = True  # False during a bulk fill, until :meth:`build_indexes`
        # Central serves by cursor and never answers a digest; without digests, re-signing the catalog in
        # batches costs each batch its own rows, not a re-hash of every bucket it touches (the whole catalog).
        self._digests = digests
        held = {row[1] for row in self._db.execute("PRAGMA table_info(sku)")}
        with transaction(self._db, self._what) as db:
            for statement in _SIGNATURE_COLUMNS if "signature" not in held else ():
                db.execute(statement)
        self.refused = 0  # entries refused for a clock too far ahead, since start (status reports it)

    def close(self) -> None:
        if self._unsynced is not None:  # stopped mid-fill: what it holds is synced, and the fill resumes from there
            self._unsynced.end(self._db, self._synchronous)
        self._db.close()

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM sku").fetchone()[0]

    def apply(self, entries: Iterable[SkuEntry], *, now_ms: int | None = None, check: Check | None = None,
              bulk: bool = False) -> int:
        """Merge ``entries`` (last writer wins); return how many rows changed.

        With ``now_ms``, entries stamped more than MAX_SKEW_MS ahead of it are refused: such an
        entry would win every later write until real time caught up. With ``check`` (a node's
        :meth:`~posswarm.sku.signature.SkuSignatures.accepted`), only the entries it passes are
        merged; it sees just those that would replace what is held, so a repeat costs no check.
        ``bulk``: part of a bulk transfer (:meth:`fill` took the rest), so a few entries do not end the fill.
        """
        fresh, refused = [], 0
        for entry in entries:
            if now_ms is not None and unpack(entry.hlc)[0] > now_ms + MAX_SKEW_MS:
                refused += 1
                continue
            fresh.append(entry)
        if refused:
            self.refused += refused
            log.warning("sku.refused_future", count=refused, limit_ms=MAX_SKEW_MS,
                        hint="a clock is ahead: check NTP on central and on this node")
        if len(fresh) < BULK_FILL and not bulk:
            self.build_indexes()  # not a bulk fill (a price change, anti-entropy's few buckets): lookups follow
        with transaction(self._db, self._what) as db:
            deferring = (self._digests and self.indexed and len(fresh) >= BULK_FILL
                         and db.execute("SELECT 1 FROM sku LIMIT 1").fetchone() is None)
            if deferring:  # in this transaction: a rollback keeps the indexes
                db.execute("DROP INDEX sku_barcode")
                db.execute("DROP INDEX sku_hlc")
            changed = self._merge(db, fresh, check)
        self.indexed = self.indexed and not deferring
        return changed

    def fill(self, buckets: Mapping[int, list[Row]], digests: Sequence[bytes], *, now_ms: int | None = None) -> list[Row]:
        """Write whole buckets as they are into those the replica holds nothing in; return the rows of the others.

        Each of ``buckets`` must be vouched for: its rows (posswarm/sku/rows.py), unique codes in code order, hash to
        ``digests[bucket]``, central's signed snapshot (:meth:`~posswarm.sku.snapshot.HeldSnapshot.split`). An empty
        bucket then needs no version lookup, no merge and no re-hash: its digest is the snapshot's. A bucket already
        holding something, or with a stamp more than MAX_SKEW_MS ahead of ``now_ms``, is left for :meth:`apply`.
        One transaction: a stop keeps whole buckets or none, and the digests of what is kept; a fresh replica's fill is
        written unsynced until :meth:`build_indexes` or :meth:`close`, and one cut short by a crash is wiped when the
        replica is opened again (posswarm/sku/unsynced_fill.py), so it restarts from nothing.
        """
        rows: list[Row] = []
        left: list[Row] = []
        if (self.indexed and sum(map(len, buckets.values())) >= BULK_FILL
                and self._db.execute("SELECT 1 FROM sku LIMIT 1").fetchone() is None):
            if self._unsynced is not None:  # a fresh replica's first batch: the fill is written unsynced until it ends
                self._unsynced.begin(self._db)
        with transaction(self._db, self._what) as db:
            empty = self._empty(db, set(buckets))
            filled = []
            for bucket, members in buckets.items():
                if bucket in empty and (now_ms is None or unpack(max(r[HLC] for r in members))[0] <= now_ms + MAX_SKEW_MS):
                    rows.extend(members)
                    filled.append((bucket, digests[bucket]))
                else:
                    left.extend(members)
            deferring = (self.indexed and len(rows) >= BULK_FILL
                         and db.execute("SELECT 1 FROM sku LIMIT 1").fetchone() is None)
            if deferring:
                db.execute("DROP INDEX sku_barcode")
                db.execute("DROP INDEX sku_hlc")
            rows.sort(key=lambda row: row[0])  # key order: B-tree writes in order are several times faster
            db.executemany(_WRITE, rows)
            db.executemany("INSERT OR REPLACE INTO bucket VALUES (?, ?)", filled)
        self.indexed = self.indexed and not deferring
        return left

    def build_indexes(self) -> None:
        """Build the lookup indexes a bulk fill left out (a no-op when they are there): the fill is over, or a
        lookup needs them now."""
        if not self.indexed:
            with transaction(self._db, self._what) as db:
                for statement in _LOOKUP_INDEXES:
                    db.execute(statement)
            self.indexed = True
        if self._unsynced is not None:
            self._unsynced.end(self._db, self._synchronous)

    def stamp_and_apply(self, build: Callable[[Clock], list[SkuEntry]]) -> int:
        """Merge what ``build`` makes with a clock following the newest stamp held, in one write transaction,
        so no other writer (the import CLI, the seeder's signer) stamps in between with a stale clock."""
        with transaction(self._db, self._what) as db:
            return self._merge(db, build(Clock(self.max_hlc())), None)

    def _merge(self, db, fresh: list[SkuEntry], check: Check | None) -> int:
        fresh.sort(key=lambda e: e.code)  # B-tree writes in key order are several times faster than random ones
        # A bucket that holds nothing (asked inside this write transaction, so no other apply fills it meanwhile)
        # has no versions to look up, and its digest after the merge is its winners' leaves, already in hand.
        empty = self._empty(db, {entry.bucket for entry in fresh}) if self._digests else set()
        held = self._versions(db, {entry.code for entry in fresh if entry.bucket not in empty})
        # Nothing held: it wins whatever its version (a fresh till's whole catalog), so none is built for it.
        newer = [entry for entry in fresh if (mine := held.get(entry.code)) is None or wins(entry.version, mine)]
        if check is not None and newer:
            newer = check(newer)
        winners: dict[str, tuple] = {}
        for entry in newer:
            version = entry.version
            if wins(version, held.get(entry.code)):
                held[entry.code] = version
                winners[entry.code] = (
                    entry.code, entry.bucket, entry.hlc, entry.origin, int(entry.deleted),
                    entry.barcode, entry.name, entry.price_cents, entry.tax_class, version[2],
                    entry.key_id, entry.signature,
                )  # fmt: skip
        db.executemany(_WRITE, winners.values())
        filled: dict[int, blake3.blake3] = {}
        for row in winners.values() if empty else ():  # code order: the order a bucket's digest hashes leaves in
            if row[1] in empty:
                filled.setdefault(row[1], blake3.blake3()).update(row[9])
        db.executemany("INSERT OR REPLACE INTO bucket VALUES (?, ?)",
                       [(bucket, hasher.digest(16)) for bucket, hasher in filled.items()])
        for bucket in {row[1] for row in winners.values()} - filled.keys() if self._digests else ():
            self._rehash(db, bucket)
        return len(winners)

    @staticmethod
    def _empty(db, buckets: set[int]) -> set[int]:
        """Which of ``buckets`` hold no entry, tombstone or live."""
        return {bucket for bucket in buckets
                if db.execute("SELECT 1 FROM sku WHERE bucket = ? LIMIT 1", (bucket,)).fetchone() is None}

    @staticmethod
    def _versions(db, codes: set[str]) -> dict[str, Version]:
        """The held ``(hlc, origin, leaf)`` of each of ``codes`` that is in the replica."""
        ordered = sorted(codes)
        held: dict[str, Version] = {}
        for start in range(0, len(ordered), _LOOKUP):
            chunk = ordered[start : start + _LOOKUP]
            params = ",".join("?" * len(chunk))
            for code, hlc, origin, leaf in db.execute(
                f"SELECT code, hlc, origin, leaf FROM sku WHERE code IN ({params})", chunk
            ):
                held[code] = (hlc, origin, leaf)
        return held

    def _rehash(self, db, bucket: int) -> None:
        digest = blake3.blake3()
        for (leaf,) in db.execute("SELECT leaf FROM sku WHERE bucket = ? ORDER BY code", (bucket,)):
            digest.update(leaf)
        db.execute("INSERT OR REPLACE INTO bucket VALUES (?, ?)", (bucket, digest.digest(16)))

    def get(self, code_or_barcode: str) -> SkuEntry | None:
        """The live entry with this code, else the newest live one with this barcode."""
        self.build_indexes()
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM sku WHERE code = ? AND deleted = 0", (code_or_barcode,)
        ).fetchone() or self._db.execute(
            f"SELECT {_COLUMNS} FROM sku WHERE barcode = ? AND deleted = 0 ORDER BY hlc DESC LIMIT 1",
            (code_or_barcode,),
        ).fetchone()
        return _entry(row) if row else None

    def entry(self, code: str) -> SkuEntry | None:
        """The stored entry for ``code``, tombstone included."""
        row = self._db.execute(f"SELECT {_COLUMNS} FROM sku WHERE code = ?", (code,)).fetchone()
        return _entry(row) if row else None

    def bucket_digests(self) -> list[bytes]:
        """BUCKETS 16-byte hashes, each over its bucket's entry leaves in code order."""
        digests = [EMPTY_BUCKET] * BUCKETS
        for bucket, digest in self._db.execute("SELECT bucket, digest FROM bucket"):
            digests[bucket] = digest
        return digests

    def entries_in(self, buckets: Iterable[int]) -> list[SkuEntry]:
        """Every entry (tombstones too) in ``buckets``: what a peer with other digests needs."""
        found: list[SkuEntry] = []
        for bucket in sorted(set(buckets)):
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM sku WHERE bucket = ? ORDER BY code", (bucket,))
            found.extend(_entry(row) for row in rows)
        return found

    def rows_in(self, buckets: Iterable[int]) -> list[Row]:
        """:meth:`entries_in` as rows (posswarm/sku/rows.py), as they are held: what a cache sends a till, which
        checks them itself, so no entry object is built here."""
        found: list[Row] = []
        for bucket in sorted(set(buckets)):
            found += self._db.execute(f"SELECT {_ROW} FROM sku WHERE bucket = ? ORDER BY code", (bucket,))
        return found

    def changes_since(self, hlc_cursor: int, limit: int = 500, *, signed_only: bool = False) -> list[SkuEntry]:
        """Entries with hlc > ``hlc_cursor``, oldest first; the last one's hlc is the next cursor.

        A page never ends part-way through entries sharing one hlc (two writers can tie),
        so resuming from the last hlc loses nothing; it may therefore exceed ``limit``.
        ``signed_only`` (central serving the caches) leaves out entries not signed yet.
        """
        signed = " AND signature != x''" if signed_only else ""
        self.build_indexes()
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM sku WHERE hlc > ?{signed} ORDER BY hlc, code LIMIT ?", (hlc_cursor, limit)
        ).fetchall()
        if rows and len(rows) == limit:
            last_hlc, last_code = rows[-1][1], rows[-1][0]
            rows += self._db.execute(
                f"SELECT {_COLUMNS} FROM sku WHERE hlc = ? AND code > ?{signed} ORDER BY code", (last_hlc, last_code)
            ).fetchall()
        return [_entry(row) for row in rows]

    def signed_in_buckets(self, first: int, watermark: int, limit: int) -> tuple[list[list], int | None]:
        """Wire forms of the signed entries stamped at or below ``watermark`` in whole buckets from ``first`` on, in
        (bucket, code) order, until ``limit`` is reached; and the next bucket to ask for (None: that was the last).

        Rows go to the wire as they are: the receiver parses and checks them, so central builds no entry objects."""
        wires: list[list] = []
        bucket = first
        while bucket < BUCKETS and len(wires) < limit:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM sku WHERE bucket = ? AND hlc <= ? AND signature != x'' ORDER BY code",
                (bucket, watermark))
            wires.extend([code, hlc, origin, bool(deleted), barcode, name, price, tax, kid, bytes(signature)]
                         for code, hlc, origin, deleted, barcode, name, price, tax, kid, signature in rows)
            bucket += 1
        return wires, bucket if bucket < BUCKETS else None

    def not_signed_by(self, kid: str, after_hlc: int, limit: int) -> list[SkuEntry]:
        """Up to ``limit`` entries stamped after ``after_hlc``, oldest first, whose signature is not by ``kid``."""
        self.build_indexes()
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM sku WHERE hlc > ? AND key_id != ? ORDER BY hlc LIMIT ?", (after_hlc, kid, limit)
        ).fetchall()
        return [_entry(row) for row in rows]

    def signed_leaves(self) -> tuple[int, Iterator[tuple[int, bytes]]]:
        """The newest signed stamp and, streamed in (bucket, code) order, the ``(bucket, leaf)`` of every signed
        entry up to it: what central's catalog snapshot hashes (posswarm/sku/snapshot.py)."""
        watermark = self._db.execute("SELECT COALESCE(MAX(hlc), 0) FROM sku WHERE signature != x''").fetchone()[0]
        rows = self._db.execute(
            "SELECT bucket, leaf FROM sku WHERE hlc <= ? AND signature != x'' ORDER BY bucket, code", (watermark,))
        return watermark, ((bucket, bytes(leaf)) for bucket, leaf in rows)

    def newest_signed(self) -> int:
        """The newest stamp of a signed entry, 0 before any (down the stamp index from the top: central re-stamps what
        it signs, so only an import not signed yet lies above it)."""
        self.build_indexes()
        row = self._db.execute("SELECT hlc FROM sku WHERE signature != x'' ORDER BY hlc DESC LIMIT 1").fetchone()
        return row[0] if row else 0

    def max_hlc(self) -> int:
        """The newest stamp held: restore a writer's :class:`~posswarm.sku.hlc.Clock` from it."""
        self.build_indexes()
        return self._db.execute("SELECT COALESCE(MAX(hlc), 0) FROM sku").fetchone()[0]

    def cursor(self, name: str = "central") -> int:
        """Where pulling changes from ``name`` resumes (0 = from the start)."""
        row = self._db.execute("SELECT value FROM cursor WHERE name = ?", (name,)).fetchone()
        return row[0] if row else 0

    def set_cursor(self, value: int, name: str = "central") -> None:
        with transaction(self._db, self._what) as db:
            db.execute("INSERT OR REPLACE INTO cursor VALUES (?, ?)", (name, value))
