"""Central's SKU catalog: import a CSV (changed rows only, deletions as tombstones) and serve changes since a cursor."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import msgpack
import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from posswarm.errors import PosswarmError
from posswarm.sku.catalog import SkuReplica
from posswarm.sku.entry import InvalidSkuEntry, SkuEntry
from posswarm.sku.hlc import Clock

ORIGIN = "central"
PAGE = 20_000
MAX_WAIT_S = 30.0
WATCH_S = 0.1
REQUIRED_COLUMNS = ("code", "barcode", "name", "price_cents", "tax_class")
_TRUE = {"1", "true", "yes", "y"}


def read_csv(path: Path) -> list[dict]:
    """Rows of ``code,barcode,name,price_cents,tax_class[,deleted]``; PosswarmError names the bad line."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise PosswarmError(f"sku import {path}: missing column(s) {', '.join(missing)}"
                                    f" (header must have {','.join(REQUIRED_COLUMNS)}[,deleted])")
            rows = []
            for number, row in enumerate(reader, 2):
                try:
                    price = int(row["price_cents"])
                except (TypeError, ValueError):
                    raise PosswarmError(f"sku import {path}:{number}: price_cents {row['price_cents']!r} is not whole cents") from None
                rows.append({"code": row["code"] or "", "barcode": row["barcode"] or "", "name": row["name"] or "",
                             "price_cents": price, "tax_class": row["tax_class"] or "",
                             "deleted": (row.get("deleted") or "").strip().lower() in _TRUE, "line": number})
            return rows
    except OSError as exc:
        raise PosswarmError(f"sku import {path}: cannot read it ({exc.strerror})") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise PosswarmError(f"sku import {path}: not a UTF-8 CSV file ({exc})") from None


def _same(entry: SkuEntry | None, row: dict) -> bool:
    if entry is None:
        return row["deleted"]
    return entry.deleted == row["deleted"] and (row["deleted"] or (
        entry.barcode, entry.name, entry.price_cents, entry.tax_class
    ) == (row["barcode"], row["name"], row["price_cents"], row["tax_class"]))


class CentralCatalog:
    """The chain's catalog; central is its only writer, so one HLC here orders every change."""

    def __init__(self, path: str) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        # Durable: a stamp handed to the caches and then lost here would be stamped again on a
        # different change, which caches whose cursor has passed it would never pull.
        self.replica = SkuReplica(path, durable=True)

    def close(self) -> None:
        self.replica.close()

    def import_rows(self, rows: list[dict], *, replace: bool = False, now_ms: int | None = None) -> dict:
        """Write what changed; with ``replace`` every live SKU absent from ``rows`` becomes a tombstone."""
        wall = int(time.time() * 1000) if now_ms is None else now_ms
        clock = Clock(self.replica.max_hlc())
        changes: list[SkuEntry] = []
        seen: set[str] = set()
        for row in rows:
            seen.add(row["code"])
            current = self.replica.entry(row["code"]) if row["code"] else None
            if _same(current, row):
                continue
            try:
                changes.append(SkuEntry(row["code"], clock.now(wall), ORIGIN, row["deleted"], row["barcode"],
                                        row["name"], row["price_cents"], row["tax_class"]))
            except InvalidSkuEntry as exc:
                raise PosswarmError(f"sku import line {row['line']}: {exc}") from None
        deleted = 0
        if replace:
            for code in self._live_codes() - seen:
                changes.append(SkuEntry(code, clock.now(wall), ORIGIN, deleted=True))
                deleted += 1
        self.replica.apply(changes)
        return {"rows": len(rows), "changed": len(changes), "tombstoned_missing": deleted, "skus": len(self.replica)}

    def _live_codes(self) -> set[str]:
        return {entry.code for entry in self.replica.changes_since(0, limit=1 << 62) if not entry.deleted}

    def page(self, cursor: int, limit: int = PAGE) -> dict:
        """Changes after ``cursor``: ``{"entries": [wire...], "cursor": next, "more": bool}``."""
        entries = self.replica.changes_since(cursor, limit)
        return {"entries": [e.to_wire() for e in entries], "cursor": entries[-1].hlc if entries else cursor,
                "more": len(entries) >= limit}


def routes(catalog: CentralCatalog) -> list[Route]:
    """``GET /sku/changes?since=CURSOR[&wait=SEC]`` (msgpack), what the store caches pull.

    With ``wait``, a caught-up cache's request is held until something changes (long poll), so a
    price change reaches the stores in well under a second without every store polling every second.
    """
    lock = trio.Lock()

    async def changes(request: Request) -> Response:
        try:
            cursor = int(request.query_params.get("since", "0"))
            wait = min(float(request.query_params.get("wait", "0")), MAX_WAIT_S)
            if cursor < 0 or not wait >= 0:
                raise ValueError
        except ValueError:
            return JSONResponse({"error": "sku changes: since must be a cursor >= 0, wait seconds >= 0"}, 400)
        with trio.move_on_after(wait):
            # The import runs in another process (the CLI), so we watch the file rather than wait on an event.
            while True:
                async with lock:
                    newest = await trio.to_thread.run_sync(catalog.replica.max_hlc)
                if newest > cursor:
                    break
                await trio.sleep(WATCH_S)
        async with lock:
            page = await trio.to_thread.run_sync(catalog.page, cursor)
        return Response(msgpack.packb(page), media_type="application/msgpack")

    return [Route("/sku/changes", changes)]
