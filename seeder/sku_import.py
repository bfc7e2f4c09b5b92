"""What a write to central's SKU catalog stamps, whichever store keeps it (SQLite or PostgreSQL): an import's rows read
and checked and the entries they change (changed rows only, SKUs missing from a whole-catalog file as tombstones),
and the signer's entries stamped anew as it signs them."""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Callable, Collection
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from posswarm.errors import PosswarmError
from posswarm.sku.entry import InvalidSkuEntry, SkuEntry
from posswarm.sku.hlc import Clock
from posswarm.sku.signature import sign

ORIGIN = "central"
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


def changes(rows: list[dict], held: Callable[[str], SkuEntry | None], live: Collection[str] | None, clock: Clock,
            wall_ms: int) -> tuple[list[SkuEntry], int]:
    """The entries ``rows`` change, stamped by ``clock``, and how many of them are tombstones for SKUs missing from
    ``rows`` (``live``: the live codes held, given for a whole-catalog import; None: only the rows count)."""
    made: list[SkuEntry] = []
    seen: set[str] = set()
    for row in rows:
        seen.add(row["code"])
        if _same(held(row["code"]) if row["code"] else None, row):
            continue
        try:
            made.append(SkuEntry(row["code"], clock.now(wall_ms), ORIGIN, row["deleted"], row["barcode"],
                                 row["name"], row["price_cents"], row["tax_class"]))
        except InvalidSkuEntry as exc:
            raise PosswarmError(f"sku import line {row['line']}: {exc}") from None
    missing = sorted(set(live) - seen) if live is not None else []
    made.extend(SkuEntry(code, clock.now(wall_ms), ORIGIN, deleted=True) for code in missing)
    return made, len(missing)


def signed_anew(pending: list[SkuEntry], key: Ed25519PrivateKey, kid: str, clock: Clock, now_ms: int,
                limit: int) -> tuple[list[SkuEntry], int]:
    """``pending`` (up to ``limit`` entries not signed by ``key``, oldest first) stamped anew by ``clock`` and
    signed, and the stamp after which the next scan for entries not signed by ``key`` starts.

    A new stamp, not just a signature: the caches' cursors have passed the old one, and a re-signed entry
    with its old stamp would look unchanged to every replica holding it."""
    fresh = [sign(dataclasses.replace(e, hlc=clock.now(now_ms)), key, kid) for e in pending]
    # A full batch may have cut a run of equal stamps: scan it again. Otherwise all up to the newest
    # stamp (ours) is signed by ``key``, and an import stamps above it.
    return fresh, pending[-1].hlc - 1 if len(pending) >= limit else clock.last
