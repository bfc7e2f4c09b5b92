"""Central's SKU catalog: import a CSV (changed rows only, deletions as tombstones), sign each entry, serve changes since a cursor."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING

import msgpack
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from posswarm import logs
from posswarm.errors import PosswarmError
from posswarm.keys import key_id, load_private_key
from posswarm.sku import snapshot
from posswarm.sku.bucket import BUCKETS
from posswarm.sku.catalog import SkuReplica
from posswarm.sku.entry import SkuEntry
from posswarm.sku.hlc import MAX_HLC, Clock
from posswarm.sku.snapshot import Snapshot
from posswarm.trust.roles import role_public_keys
from seeder import postgres, sku_import
from seeder.sku_import import read_csv  # noqa: F401 (re-exported: the import CLI and tests name the catalog)
from seeder.tuf_repository import Repository

if TYPE_CHECKING:
    from seeder.sku_postgres import PostgresCatalog

log = logs.get("seeder")

PAGE = 20_000
SIGN_BATCH = 5_000  # entries per signing transaction: ~0.3 s, so the routes are never held up long
MAX_WAIT_S = 30.0
# A new catalog snapshot at most this often: hashing the whole catalog holds the routes up (measured: 0.5 s of
# CPU per 100k SKUs), and a change since the last one costs the tills one bucket's signature checks, not more.
SNAPSHOT_EVERY_S = 10.0
WATCH_S = 0.1
# How often a seeder whose signer waits for the other seeder's (PostgreSQL catalog) asks for the turn again: the
# takeover after the signing seeder dies is within this of PostgreSQL closing its connection.
SIGNER_RETRY_S = 0.5


def open_catalog(url: str) -> CentralCatalog | PostgresCatalog:
    """``--sku-db``: ``postgresql://...`` (or ``postgres://``), shared by every seeder of the chain, or a SQLite path
    (``sqlite:///path`` or just ``path``) for one seeder."""
    if postgres.is_url(url):
        from seeder.sku_postgres import PostgresCatalog

        return PostgresCatalog(url)
    return CentralCatalog(postgres.sqlite_path(url))


class CentralCatalog:
    """The chain's catalog; central is its only writer, so one HLC here orders every change."""

    def __init__(self, path: str) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        # Durable: a stamp handed to the caches and then lost here would be stamped again on a
        # different change, which caches whose cursor has passed it would never pull.
        self.replica = SkuReplica(path, durable=True, digests=False)
        self.lock = trio.Lock()  # one connection: the routes and the signer take turns in worker threads
        self.signing_lock = self.lock
        self.snapshot: Snapshot | None = None  # the newest signed catalog snapshot, served with every page

    def close(self) -> None:
        self.replica.close()

    def import_rows(self, rows: list[dict], *, replace: bool = False, now_ms: int | None = None) -> dict:
        """Write what changed; with ``replace`` every live SKU absent from ``rows`` becomes a tombstone.

        Written unsigned: the running seeder stamps and signs them anew (:func:`sign_forever`)."""
        wall = int(time.time() * 1000) if now_ms is None else now_ms
        counts = {"changed": 0, "deleted": 0}

        def changes_of(clock: Clock) -> list[SkuEntry]:
            made, counts["deleted"] = sku_import.changes(rows, self.replica.entry, self._live_codes() if replace else None,
                                                         clock, wall)
            counts["changed"] = len(made)
            return made

        self.replica.stamp_and_apply(changes_of)
        return {"rows": len(rows), "changed": counts["changed"], "tombstoned_missing": counts["deleted"],
                "skus": len(self.replica)}

    def _live_codes(self) -> set[str]:
        return {entry.code for entry in self.replica.changes_since(0, limit=1 << 62) if not entry.deleted}

    def page(self, cursor: int, limit: int | None = None) -> dict:
        """Signed changes after ``cursor``: ``{"entries": [wire...], "cursor": next, "more": bool, "snapshot": wire}``
        (the newest catalog snapshot, or None before the first)."""
        limit = PAGE if limit is None else limit
        entries = self.replica.changes_since(cursor, limit, signed_only=True)
        return {"entries": [e.to_wire() for e in entries], "cursor": entries[-1].hlc if entries else cursor,
                "more": len(entries) >= limit, "snapshot": self.snapshot.to_wire() if self.snapshot else None}

    def bucket_page(self, first: int, watermark: int, limit: int | None = None) -> dict:
        """Whole buckets of the signed entries stamped at or below ``watermark`` (a snapshot's), from bucket
        ``first`` on, for a cache far behind: ``{"entries": [wire...], "next": bucket or None when done}``."""
        wires, after = self.replica.signed_in_buckets(first, watermark, PAGE if limit is None else limit)
        return {"entries": wires, "next": after}

    def take_snapshot(self, key: Ed25519PrivateKey) -> Snapshot:
        """Sign a snapshot of every signed entry, streamed from the file on a connection of its own (WAL: the
        routes and the signer go on meanwhile; 1M SKUs took 26 s here at load 10); it is served from then on."""
        reader = SkuReplica(self.replica.path, durable=True, digests=False)
        try:
            watermark, leaves = reader.signed_leaves()
            made = snapshot.sign(snapshot.build(watermark, leaves), key)
        finally:
            reader.close()
        self.snapshot = made
        return made

    def newest_signed(self) -> int:
        """The newest stamp of a signed entry (0 before any): a cache whose cursor is below it has a change waiting."""
        return self.replica.newest_signed()

    def sign_pending(self, key: Ed25519PrivateKey, *, after_hlc: int = 0, now_ms: int,
                     limit: int = SIGN_BATCH) -> tuple[int, int]:
        """Stamp anew and sign with ``key`` up to ``limit`` entries stamped after ``after_hlc`` and not signed by
        it: ``(how many, where the next scan starts)``.

        A new stamp, not just a signature: the caches' cursors have passed the old one, and a re-signed entry
        with its old stamp would look unchanged to every replica holding it."""
        kid = key_id(key.public_key())
        scan = {"next": after_hlc, "signed": 0}

        def signed_anew(clock: Clock) -> list[SkuEntry]:
            fresh, scan["next"] = sku_import.signed_anew(self.replica.not_signed_by(kid, after_hlc, limit), key, kid,
                                                         clock, now_ms, limit)
            scan["signed"] = len(fresh)
            return fresh

        self.replica.stamp_and_apply(signed_anew)
        return scan["signed"], scan["next"]

    def take_signer_turn(self) -> bool:
        """Whether this seeder signs: always, as the file's only writer (the PostgreSQL catalog waits its turn)."""
        return True

    def drop_signer_turn(self) -> None:
        """Nothing to hand over: no other seeder shares the file."""


async def sign_forever(catalog: CentralCatalog | PostgresCatalog, key_path: Path, repository: Repository | None = None,
                       *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Keep every entry central serves signed by the SKU key in ``key_path`` (KEYS/sku.key).

    The file is watched: after ``keys rotate sku`` the whole catalog is stamped and signed again with the
    new key, and the caches pull it as changes (nodes take the new key from the rotated root). On a catalog
    shared by two seeders only the one holding the signer's turn signs; the other waits to take it over."""
    key = load_private_key(key_path)
    _check_in_root(key, key_path, repository)
    signer = _Signer(catalog, key, key_path, repository)
    task_status.started()
    while True:
        waiting = False
        while not await trio.to_thread.run_sync(catalog.take_signer_turn):
            if not waiting:
                log.info("sku.signer_waiting", fix="another seeder signs the shared catalog; this one takes over "
                                                   "when that one stops", retry_s=SIGNER_RETRY_S)
                waiting = True
            await trio.sleep(SIGNER_RETRY_S)
        log.info("sku.signer_turn", key=key_id(signer.key.public_key()))
        try:
            await signer.run()
        except PosswarmError as exc:  # the shared catalog's connection lost, and the turn with it
            log.warning("sku.signer_lost", reason=str(exc), retry_s=SIGNER_RETRY_S)
            await trio.to_thread.run_sync(catalog.drop_signer_turn)
            await trio.sleep(SIGNER_RETRY_S)


class _Signer:
    """The signing loop of the seeder holding the signer's turn: sign what is pending, now and then a snapshot."""

    def __init__(self, catalog, key: Ed25519PrivateKey, key_path: Path, repository: Repository | None) -> None:
        self.catalog, self.key, self.key_path, self.repository = catalog, key, key_path, repository
        self.seen = _file_stamp(key_path)
        self.snapshot_at = -SNAPSHOT_EVERY_S

    async def run(self) -> None:
        catalog, after = self.catalog, 0  # a turn taken over: what the other seeder signed is scanned once
        while True:
            if (stamp := _file_stamp(self.key_path)) != self.seen:
                try:
                    self.key, self.seen, after = load_private_key(self.key_path), stamp, 0
                    _check_in_root(self.key, self.key_path, self.repository)
                except PosswarmError as exc:  # mid-rotation: the new file is not written yet
                    log.warning("sku.signing_key_unreadable", reason=str(exc), retry_s=WATCH_S)
            key = self.key
            async with catalog.signing_lock:
                wall = int(time.time() * 1000)
                signed, after = await trio.to_thread.run_sync(
                    lambda: catalog.sign_pending(key, after_hlc=after, now_ms=wall))
            if signed:
                log.info("sku.signed", entries=signed, key=key_id(key.public_key()))
            if signed < SIGN_BATCH:
                held = catalog.snapshot
                if trio.current_time() - self.snapshot_at >= SNAPSHOT_EVERY_S and (
                        held is None or held.watermark < after or held.key_id != key_id(key.public_key())):
                    self.snapshot_at = trio.current_time()
                    made = await trio.to_thread.run_sync(catalog.take_snapshot, key)
                    log.info("sku.snapshot", watermark=made.watermark, key=made.key_id,
                             took_s=round(trio.current_time() - self.snapshot_at, 2))
                await trio.sleep(WATCH_S)


def _check_in_root(key: Ed25519PrivateKey, key_path: Path, repository: Repository | None) -> None:
    """Log which key signs, and warn when the root of trust does not name it (nodes would refuse all it signs)."""
    kid = key_id(key.public_key())
    log.info("sku.signing", key=kid, file=str(key_path))
    if repository is None or not repository.exists():
        return
    try:
        named = [key_id(k) for k in role_public_keys(repository.root().signed, "sku")]
    except (OSError, ValueError) as exc:
        log.warning("sku.root_unreadable", reason=str(exc)[:200])
        return
    if kid not in named:  # the root may follow a moment later (keys rotate writes the key first): keep signing
        log.warning("sku.key_not_in_root", key=kid, root_sku_keys=named,
                   fix="pass the sku.key of this RELEASES' `keys init` (or `keys rotate sku`): nodes refuse "
                       "entries signed by a key their root of trust does not name; during `keys rotate sku` the new "
                       "root follows in a moment")


def _file_stamp(path: Path) -> tuple | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_ino, st.st_size)


class _Newest:
    """The newest signed stamp, looked up once per WATCH_S however many caches long-poll: with one look per waiting
    cache, 100 stores' polls queued on the catalog's lock (price change to every till p99 14.5 s at 100 stores)."""

    def __init__(self, catalog: CentralCatalog | PostgresCatalog) -> None:
        self.catalog, self.stamp, self.looked_at, self.looking = catalog, 0, -math.inf, False
        self.changed = trio.Event()

    async def past(self, cursor: int) -> None:
        """Return once a signed entry is stamped after ``cursor``."""
        while self.stamp <= cursor:
            if self.looking or trio.current_time() - self.looked_at < WATCH_S:
                # Signed by another task or process (this seeder's signer, or the other seeder's on a shared
                # catalog): the newest signed stamp is looked up again every WATCH_S, and the waiters woken.
                with trio.move_on_after(WATCH_S):
                    await self.changed.wait()
                continue
            self.looking = True
            try:
                async with self.catalog.lock:
                    stamp = await trio.to_thread.run_sync(self.catalog.newest_signed)
            finally:
                self.looking, self.looked_at = False, trio.current_time()
            if stamp > self.stamp:
                self.stamp, changed, self.changed = stamp, self.changed, trio.Event()
                changed.set()


def routes(catalog: CentralCatalog | PostgresCatalog) -> list[Route]:
    """``GET /sku/changes?since=CURSOR[&wait=SEC]`` (msgpack), what the store caches pull, and
    ``GET /sku/buckets?from=BUCKET&watermark=W``, the catalog snapshot's buckets whole for a cache far behind.

    With ``wait``, a caught-up cache's request is held until something changes (long poll), so a
    price change reaches the stores in well under a second without every store polling every second.
    """
    lock = catalog.lock
    newest = _Newest(catalog)

    async def changes(request: Request) -> Response:
        try:
            cursor = int(request.query_params.get("since", "0"))
            wait = min(float(request.query_params.get("wait", "0")), MAX_WAIT_S)
            if cursor < 0 or not wait >= 0:
                raise ValueError
        except ValueError:
            return JSONResponse({"error": "sku changes: since must be a cursor >= 0, wait seconds >= 0"}, 400)
        try:
            with trio.move_on_after(wait):
                await newest.past(cursor)
            async with lock:
                page = await trio.to_thread.run_sync(catalog.page, cursor)
        except PosswarmError as exc:  # the shared catalog's database out of reach: the cache retries
            return JSONResponse({"error": str(exc)}, 503)
        return Response(msgpack.packb(page), media_type="application/msgpack")

    async def buckets(request: Request) -> Response:
        try:
            first, watermark = int(request.query_params.get("from", "0")), int(request.query_params["watermark"])
            if not 0 <= first < BUCKETS or not 0 <= watermark <= MAX_HLC:
                raise ValueError
        except (KeyError, ValueError):
            return JSONResponse({"error": f"sku buckets: from must be a bucket 0-{BUCKETS - 1} and watermark the"
                                          " stamp of a catalog snapshot"}, 400)
        try:
            async with lock:
                page = await trio.to_thread.run_sync(catalog.bucket_page, first, watermark)
        except PosswarmError as exc:
            return JSONResponse({"error": str(exc)}, 503)
        return Response(msgpack.packb(page), media_type="application/msgpack")

    return [Route("/sku/changes", changes), Route("/sku/buckets", buckets)]
