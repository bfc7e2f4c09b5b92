"""The cache's HTTP calls to central: hand over a batch of sales, pull SKU changes since a cursor or whole buckets."""

from __future__ import annotations

from collections.abc import Sequence

import httpx
import msgpack

from posswarm.errors import PosswarmError
from posswarm.identity.credential import Credential
from posswarm.sales import batch_signature
from posswarm.sales.model import Sale
from posswarm.sku.bucket import BUCKETS
from posswarm.sku.entry import SkuEntry
from posswarm.sku.snapshot import Snapshot
from posswarm.wallclock import now_ms

MSGPACK = "application/msgpack"
SALES_PATH = "/sales/ingest"
SKU_PATH = "/sku/changes"
SKU_BUCKETS_PATH = "/sku/buckets"
# A bucket page is ~20k entries (seeder/sku.py PAGE) and its last bucket whole: ~3 MB at 1M SKUs of
# ordinary names; the cap leaves room for long names and refuses a central (or a proxy) sending without end.
MAX_BUCKET_PAGE = 64 * 1024 * 1024


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


async def sku_buckets(client: httpx.AsyncClient, base_url: str, first: int,
                      watermark: int) -> tuple[list[SkuEntry], int | None]:
    """Whole buckets from ``first`` on of central's signed entries up to the catalog snapshot at ``watermark``:
    (entries, the next bucket to ask for, None when that was the last); the snapshot checks them, not this."""
    url = f"{base_url.rstrip('/')}{SKU_BUCKETS_PATH}"
    try:
        async with client.stream("GET", url, params={"from": first, "watermark": watermark}) as response:
            if response.status_code != 200:
                raise PosswarmError(f"sku buckets from {url}: HTTP {response.status_code}; will pull changes")
            body = bytearray()
            async for part in response.aiter_bytes():
                body += part
                if len(body) > MAX_BUCKET_PAGE:
                    raise PosswarmError(f"sku buckets from {url}: page over {MAX_BUCKET_PAGE} bytes; refused,"
                                        " will pull changes")
    except httpx.HTTPError as exc:
        raise PosswarmError(f"sku buckets from {url}: {type(exc).__name__} ({exc}); will pull changes") from None
    try:
        doc = msgpack.unpackb(bytes(body), raw=False)
        entries, after = [SkuEntry.from_wire(wire) for wire in doc["entries"]], doc["next"]
    except (ValueError, KeyError, TypeError, AttributeError, PosswarmError, msgpack.UnpackException) as exc:
        raise PosswarmError(f"sku buckets from {url}: malformed answer ({exc}); is central on this version?") from None
    if after is not None and (type(after) is not int or not first < after < BUCKETS):
        raise PosswarmError(f"sku buckets from {url}: bad next bucket {after!r} after bucket {first}")
    return entries, after
