"""``posswarm sale record`` and ``posswarm sku get``: the local API from a shell (or a POS that prefers exec)."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import httpx

from posswarm.errors import PosswarmError
from posswarm.sales.model import TXN


def add_commands(sub) -> None:
    sale = sub.add_parser("sale", help="record a sale on this device (answers once it is committed)")
    sale_actions = sale.add_subparsers(dest="action", required=True)
    record = sale_actions.add_parser("record", help="commit a sale to the outbox; prints its identity as JSON")
    _where(record)
    record.add_argument("--line", action="append", required=True, metavar="SKU:QTY:UNIT_CENTS",
                        help="a basket line (repeatable); negative QTY is a return")
    record.add_argument("--tender", action="append", default=[], metavar="KIND:CENTS",
                        help="how it was paid (repeatable; default: cash for the total)")
    record.add_argument("--txn", metavar="ID",
                        help="the POS transaction id (Idempotency-Key): repeating the command records the sale once")
    _where(sale_actions.add_parser("last", help="the last committed sale (reprint it after a crash)"))

    sku = sub.add_parser("sku", help="look up the store's SKU catalog on this node (works while the cache is down)")
    sku_actions = sku.add_subparsers(dest="action", required=True)
    get = sku_actions.add_parser("get", help="one SKU by code or barcode, as JSON")
    _where(get)
    get.add_argument("code", metavar="CODE_OR_BARCODE")


def _where(parser) -> None:
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", type=Path, help="the node's TOML file")
    where.add_argument("--api", help="the local API URL, e.g. http://127.0.0.1:7947")


def _api(args) -> str:
    if args.api:
        return args.api.rstrip("/")
    from posswarm import config as node_config
    from posswarm.storedata.service import api_url

    return api_url(node_config.load(args.config).data_dir)


def _field(text: str, parts: int, what: str) -> list:
    pieces = text.rsplit(":", parts - 1)
    try:
        if len(pieces) != parts:
            raise ValueError
        return [pieces[0], *(int(p) for p in pieces[1:])]
    except ValueError:
        raise PosswarmError(f"{what} {text!r}: expected {'SKU:QTY:UNIT_CENTS' if parts == 3 else 'KIND:CENTS'}") from None


def run(args) -> int:
    base = _api(args)
    try:
        if args.command == "sale" and args.action == "record":
            if args.txn is not None and not TXN.fullmatch(args.txn):
                raise PosswarmError(f"--txn {args.txn!r:.80}: a transaction id is 1-64 visible ASCII characters")
            lines = [dict(zip(("sku", "qty", "unit_cents"), _field(t, 3, "--line"))) for t in args.line]
            tenders = [dict(zip(("kind", "cents"), _field(t, 2, "--tender"))) for t in args.tender]
            headers = {"Idempotency-Key": args.txn} if args.txn else {}
            response = httpx.post(f"{base}/sales", json={"lines": lines, "tenders": tenders}, headers=headers,
                                  timeout=30)
        elif args.command == "sale":
            response = httpx.get(f"{base}/sales/last", timeout=10)
        else:
            response = httpx.get(f"{base}/sku/{quote(args.code, safe='')}", timeout=10)
    except httpx.HTTPError as exc:
        raise PosswarmError(f"local API {base}: {type(exc).__name__} ({exc}); is `posswarm node` running?") from None
    try:
        doc = response.json()
    except ValueError:
        raise PosswarmError(f"local API {base}: HTTP {response.status_code} without JSON; is that a posswarm node?") from None
    if response.status_code >= 400:
        raise PosswarmError(doc.get("error", f"HTTP {response.status_code}"))
    print(json.dumps(doc, sort_keys=True))
    return 0
