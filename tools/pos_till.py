"""A simulated POS application at one till: rings unique baskets and retries each under its transaction id until answered.

It follows the retry rules of docs/store-data.md: every transaction gets an id before its first
request and keeps it for every retry (timeout, refused or reset connection, 5xx, a till that is
down); it moves on only when the till answered 201 (recorded) or 200 (recorded before). Each step is
written to the POS's own ledger (tools/pos_ledger.py) first, so the verdict can tell in-doubt from never-sent.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import trio

from tools.pos_ledger import ANSWERED, PosLedger

RETRY_PAUSE_S = 0.1


@dataclass
class Shop:
    """What every till's POS shares: the ledger (one writer at a time) and how many sales are still to ring."""

    ledger: PosLedger
    quota: int
    run_id: str = field(default_factory=lambda: f"{random.getrandbits(24):06x}")
    lock: trio.Lock = field(default_factory=trio.Lock)
    latencies_ms: list[float] = field(default_factory=list)

    async def write(self, fn: Callable, *args) -> None:
        async with self.lock:
            await trio.to_thread.run_sync(fn, *args)


def _outcome(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, httpx.ConnectError):
        return "connect"
    return "reset"  # read/write error, connection closed mid-answer: the till may have committed


async def ring(shop: Shop, till: str, url_of: Callable[[], str | None], rate: float, rng: random.Random, *,
               timeout: float = 5.0, local_address: str | None = None) -> None:
    """Sell until the shop's quota is met: one basket every 1/``rate`` s, each retried until answered."""
    rung: set[tuple] = set()
    transport = httpx.AsyncHTTPTransport(local_address=local_address)
    async with httpx.AsyncClient(timeout=timeout, transport=transport) as client:
        number = 0
        while shop.quota > 0:
            number += 1
            basket = _basket(rng, rung)
            txn = f"{shop.run_id}-{till}-{number:06d}"
            await shop.write(shop.ledger.begin, txn, till, basket)
            await _until_answered(shop, client, txn, basket, url_of)
            shop.quota -= 1
            await trio.sleep(1.0 / rate)


async def _until_answered(shop: Shop, client: httpx.AsyncClient, txn: str, basket: dict,
                          url_of: Callable[[], str | None]) -> None:
    attempt = 0
    while True:
        url = url_of()
        if url is None:  # the till has not started yet: nothing was sent, so no attempt to record
            await trio.sleep(RETRY_PAUSE_S)
            continue
        attempt += 1
        started = trio.current_time()
        try:
            response = await client.post(f"{url}/sales", json=basket, headers={"Idempotency-Key": txn})
            outcome = str(response.status_code)
        except httpx.HTTPError as exc:
            outcome = _outcome(exc)
        await shop.write(shop.ledger.attempt, txn, attempt, outcome)
        if outcome in ANSWERED:
            shop.latencies_ms.append((trio.current_time() - started) * 1000)
            return
        if outcome.startswith("4"):  # refused as sent (409: the id is taken by another basket): resending cannot help
            return
        await trio.sleep(RETRY_PAUSE_S)


def _basket(rng: random.Random, rung: set[tuple]) -> dict:
    """A new basket, never one this till rang before (the verdict may match a keyless sale by it)."""
    while True:
        lines = [(f"SKU{rng.randint(1, 500):04d}", rng.randint(1, 3), rng.randint(50, 5000))
                 for _ in range(rng.randint(1, 3))]
        if tuple(lines) not in rung:
            rung.add(tuple(lines))
            break
    total = sum(qty * cents for _, qty, cents in lines)
    return {"lines": [{"sku": s, "qty": q, "unit_cents": c} for s, q, c in lines],
            "tenders": [{"kind": rng.choice(["cash", "card"]), "cents": total}]}
