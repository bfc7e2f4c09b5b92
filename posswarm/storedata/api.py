"""The node's local store-data API for point-of-sale software (HTTP on 127.0.0.1; see docs/store-data.md)."""

from __future__ import annotations

import json

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from posswarm.errors import PosswarmError
from posswarm.sales.outbox import TxnConflict
from posswarm.sku.entry import SkuEntry
from posswarm.sqlite_file import StoreFileError
from posswarm.storedata.local_only import LocalOnly

MAX_BODY = 1 << 20


def sku_json(entry: SkuEntry) -> dict:
    return {"code": entry.code, "barcode": entry.barcode, "name": entry.name, "price_cents": entry.price_cents,
            "tax_class": entry.tax_class, "hlc": entry.hlc}


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status)


def parse_sale_request(doc: object) -> tuple[list[tuple[str, int, int]], list[tuple[str, int]]]:
    """``{"lines": [{sku, qty, unit_cents}], "tenders": [{kind, cents}]}``; no tenders = one cash tender."""
    if not isinstance(doc, dict) or not isinstance(doc.get("lines"), list):
        raise PosswarmError('sale: body must be {"lines": [{"sku", "qty", "unit_cents"}], "tenders": [...]}')
    try:
        lines = [(line["sku"], line["qty"], line["unit_cents"]) for line in doc["lines"]]
        tenders = [(t["kind"], t["cents"]) for t in doc.get("tenders") or []]
    except (KeyError, TypeError):
        raise PosswarmError("sale: every line needs sku, qty, unit_cents; every tender kind, cents") from None
    if not tenders and all(isinstance(q, int) and isinstance(c, int) for _, q, c in lines):
        tenders = [("cash", sum(q * c for _, q, c in lines))]
    return lines, tenders


def local_app(data) -> Starlette:
    """``data`` is a DeviceData (sales and lookups) or a CacheData (lookups only)."""

    async def record(request: Request) -> Response:
        if not hasattr(data, "record"):
            return _error(404, "sales are recorded on a device, not on the store cache")
        body = await request.body()
        if len(body) > MAX_BODY:
            return _error(413, f"sale: body over {MAX_BODY} bytes")
        try:
            lines, tenders = parse_sale_request(_json(body))
            # The POS's transaction id: a retry with it gets the sale already recorded, never a second one.
            recorded = await data.record(lines, tenders, request.headers.get("idempotency-key"))
        except StoreFileError as exc:  # our disk, not the sale: the POS must not print, and may retry
            return _error(503, str(exc))
        except TxnConflict as exc:
            return _error(409, str(exc))
        except PosswarmError as exc:
            return _error(400, str(exc))
        # Answered only now: the sale is committed (fsync) to the outbox, so the receipt may print.
        doc = {**recorded.sale.to_json(), "repeat": recorded.repeat}
        if recorded.repeat:
            return JSONResponse(doc, 200, headers={"Idempotent-Replayed": "true"})
        return JSONResponse(doc, 201)

    async def last(request: Request) -> Response:
        if not hasattr(data, "last_sale"):
            return _error(404, "sales are recorded on a device, not on the store cache")
        sale = await data.last_sale()
        return JSONResponse(sale.to_json()) if sale else _error(404, "no sale recorded yet")

    async def sku(request: Request) -> Response:
        code = request.path_params["code"]
        entry = await data.lookup(code)
        return JSONResponse(sku_json(entry)) if entry else _error(404, f"sku {code!r}: not in this store's catalog")

    async def day_totals(request: Request) -> Response:
        if not hasattr(data, "day_totals"):
            return _error(404, "per-day totals are kept by the store cache, not by a device")
        return JSONResponse(await data.day_totals())

    async def status(request: Request) -> Response:
        return JSONResponse(await data.status())

    return Starlette(middleware=[Middleware(LocalOnly)], routes=[
        Route("/sales", record, methods=["POST"]),
        Route("/sales/last", last),
        Route("/sales/days", day_totals),
        Route("/sku/{code}", sku),
        Route("/storedata", status),
    ])


def _json(body: bytes) -> object:
    try:
        return json.loads(body)
    except ValueError:
        raise PosswarmError("sale: body is not JSON") from None
