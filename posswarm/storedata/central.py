"""The cache's HTTP calls to central: hand over a batch of sales, pull SKU changes since a cursor."""

from __future__ import annotations

from collections.abc import Sequence

import httpx
import msgpack

from posswarm.errors import PosswarmError
from posswarm.identity.credential import Credential
from posswarm.sales import batch_signature
from posswarm.sales.model import Sale
from posswarm.sku.entry import SkuEntry
from posswarm.sku.snapshot import Snapshot
from posswarm.wallclock import now_ms

MSGPACK = "application/msgpack"
SALES_PATH = "/sales/ingest"
SKU_PATH = "/sku/changes"


async def post_sales(client: httpx.AsyncClient, base_url: str, store: str, sales: Sequence[Sale],
                     credential: Credential | None) -> dict:
    """Hand ``sales`` to central, signed with the cache's node key; returns its ``{"stored", "duplicates"}``.
    Safe to repeat: central dedupes. Without a credential the batch goes unsigned (and central refuses it)."""
    url = f"{base_url.rstrip('/')}{SALES_PATH}"
    body = msgpack.packb([sale.to_wire() for sale in sales])
    headers = {"content-type": MSGPACK}
    if credential is not None:  # signed at each attempt: a retry after hours still carries a fresh time
        headers |= batch_signature.sign(credential.key, credential.certificate, store, body, now_ms=now_ms())
    try:
        response = await client.post(url, params={"store": store}, content=body, headers=headers)
    except httpx.HTTPError as exc:
        raise PosswarmError(f"sales to central {url}: {type(exc).__name__} ({exc}); will retry") from None
    if response.status_code in (401, 403):  # the batch stays in the ledger; an operator fixes the credential
        raise PosswarmError(f"sales to central {url}: refused ({_error(response)}); kept, will retry")
    if response.status_code != 200:
        raise PosswarmError(f"sales to central {url}: HTTP {response.status_code} {response.text[:200]!r}; will retry")
    try:
        return response.json()
    except ValueError:
        raise PosswarmError(f"sales to central {url}: answer is not JSON; is this a posswarm seeder?") from None


def _error(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"])[:300]
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}"


async def sku_changes(client: httpx.AsyncClient, base_url: str, cursor: int,
                      wait: float = 0.0) -> tuple[list[SkuEntry], int, bool, Snapshot | None]:
    """One page of catalog changes after ``cursor``: (entries, next cursor, more pages waiting, central's newest
    catalog snapshot, its signature not checked yet).

    ``wait`` > 0 lets central hold the answer until there is a change (long poll).
    """
    url = f"{base_url.rstrip('/')}{SKU_PATH}"
    try:
        response = await client.get(url, params={"since": cursor, "wait": wait}, timeout=wait + 30.0)
    except httpx.HTTPError as exc:
        raise PosswarmError(f"sku changes from {url}: {type(exc).__name__} ({exc}); will retry") from None
    if response.status_code != 200:
        raise PosswarmError(f"sku changes from {url}: HTTP {response.status_code}; will retry")
    try:
        doc = msgpack.unpackb(response.content, raw=False)
        entries = [SkuEntry.from_wire(wire) for wire in doc["entries"]]
        next_cursor, more = doc["cursor"], doc["more"]
        snapshot = None if doc.get("snapshot") is None else Snapshot.from_wire(doc["snapshot"])
    except (ValueError, KeyError, TypeError, AttributeError, PosswarmError, msgpack.UnpackException) as exc:
        raise PosswarmError(f"sku changes from {url}: malformed answer ({exc}); is central on this version?") from None
    if type(next_cursor) is not int or next_cursor < cursor or type(more) is not bool:
        raise PosswarmError(f"sku changes from {url}: bad cursor {next_cursor!r} after {cursor}")
    return entries, next_cursor, more, snapshot
