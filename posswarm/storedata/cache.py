"""The store cache's store data: ledger and acks for the tills' sales, batches to central, SKU changes from central."""

from __future__ import annotations

import collections
import random
import ssl

import httpx
import trio

from posswarm import logs
from posswarm.errors import PosswarmError
from posswarm.gossip.driver import StoreChannel
from posswarm.gossip.messages import SalesAck, SalesDigest, SalesPush, SkuDigest, SkuEntries, SkuRequest
from posswarm.identity.credential import Credential
from posswarm.keys import KeyRing
from posswarm.sales.ledger import Ledger
from posswarm.sku.catalog import SkuReplica
from posswarm.sku.entry import SkuEntry
from posswarm.sku.signature import SkuSignatures
from posswarm.sku.snapshot import HeldSnapshot, Snapshot
from posswarm.storedata import central
from posswarm.storedata.inbox import handle_each
from posswarm.storedata.sku_sync import SkuServer, batches
from posswarm.storedata.sqlite_thread import SqliteThread
from posswarm.wallclock import now_ms

log = logs.get("storedata")

FORWARD_BATCH = 500  # ~144 KB per request (notes §4)
# Let a burst of sales gather into one request to central.
FORWARD_GATHER_S = 0.2
FORWARD_IDLE_S = 5.0
# After central answered a batch that was not full, the cache waits about as long as central took before it sends
# the next (self-clocking, at most this long): when central is busy its answers slow and each cache's batches grow.
# A request cost central ~0.9 ms of CPU whatever its size (a sale ~12 us), and caches that sent again the moment
# they were answered kept central's queue full: paced, a sale waits at its cache instead, where it costs no CPU
# (posswarm-bench sales-ingest --rate 10000, and a model of it: docs/benchmarks.md).
FORWARD_PACE_MAX_S = 5.0
# Retry forever: a WAN or central outage may last hours and the ledger keeps everything meanwhile;
# a minute between attempts keeps thousands of stores from hammering central as it comes back.
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 60.0
DIGEST_S = 1.0
# A page of changes this small is pushed to every till at once; bigger ones go by anti-entropy.
PUSH_CHANGES_MAX = 2000
LONG_POLL_S = 25.0


def forward_pause(answered_s: float, sent: int, jitter: float = 0.5) -> float:
    """Seconds to wait before the next batch, after central answered one of ``sent`` sales in ``answered_s``: none
    after a full batch (a backlog drains at central's pace), else about as long as central took (``jitter`` in
    [0, 1) spreads it over 0.5-1.5 times that), up to FORWARD_PACE_MAX_S. Central answers a whole commit's batches
    at once: paused alike, their caches would all come back at once."""
    if sent >= FORWARD_BATCH:
        return 0.0
    return min(max(answered_s, 0.0) * (0.5 + jitter), FORWARD_PACE_MAX_S)


class CacheData:
    """Owns the ledger and the store's SKU replica; changed only by its own tasks."""

    def __init__(self, channel: StoreChannel, *, ledger_path: str, sku_path: str, store: str, central_url: str,
                 central_tls: ssl.SSLContext | bool = True, sku_keys: KeyRing | None = None,
                 timezone: str = "UTC", sku_poll_s: float = 2.0, credential: Credential | None = None) -> None:
        self.channel = channel
        self.credential = credential  # signs every batch to central: only the store's certified cache is believed
        self._ledger_path, self._sku_path, self._timezone = ledger_path, sku_path, timezone
        self.store, self.central_url, self.sku_poll_s = store, central_url, sku_poll_s
        self.central_tls = central_tls  # how central's HTTPS is verified
        self.ledger: Ledger | None = None
        self.replica: SkuReplica | None = None
        self._sales_db = SqliteThread()
        self._sku_db = SqliteThread()
        self._forward_now = trio.Event()
        # Central's signature, checked on every entry pulled (no keys given: every entry is refused).
        self.signatures = SkuSignatures(sku_keys or KeyRing([]))
        # Central's signed catalog snapshot, checked here and relayed with every bulk transfer to a till.
        self.snapshot = HeldSnapshot(self.signatures)
        self.central_error: str | None = None
        self.forwarded = 0
        self.refused: collections.Counter[str] = collections.Counter()  # gossip messages refused, by kind
        # False while a big catch-up from central is under way: answering tills' digests then would
        # send them the whole catalog once per page pulled. True when caught up, or central is unreachable.
        self.sku_settled = False

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        self.ledger = await trio.to_thread.run_sync(lambda: Ledger(self._ledger_path, timezone=self._timezone))
        self.replica = await trio.to_thread.run_sync(SkuReplica, self._sku_path)
        self.sku = SkuServer(self.channel, self.replica, self._sku_db, lambda: self.snapshot.snapshot)
        try:
            async with httpx.AsyncClient(timeout=30.0, verify=self.central_tls) as client, \
                    trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(handle_each, self.channel, self._handle, self.refused)
                nursery.start_soon(self._digests)
                nursery.start_soon(self._forward, client)
                nursery.start_soon(self._pull_sku, client)
                log.info("storedata.cache", skus=len(self.replica), central=self.central_url)
                task_status.started(self)
        finally:
            with trio.CancelScope(shield=True):
                await self._sales_db.run(self.ledger.close)
                await self._sku_db.run(self.replica.close)

    async def day_totals(self) -> list[dict]:
        """The store's per-day, per-SKU quantities and cents (from every sale in the ledger)."""
        totals = await self._sales_db.run(self.ledger.totals)
        return [{"day": day, "sku": code, "qty": qty, "cents": cents}
                for (day, code), (qty, cents) in sorted(totals.by_day_sku.items())]

    async def lookup(self, code_or_barcode: str) -> SkuEntry | None:
        return await self._sku_db.run(self.replica.get, code_or_barcode)

    # ---- from the tills -----------------------------------------------------------------------

    async def _handle(self, node: str, message) -> None:
        """A certified till's message (posswarm/storedata/permissions.py let through only what it may send)."""
        if isinstance(message, SalesPush):  # its own sales only
            # Ack only after the commit: the ack lets the till forget the sale.
            hwms = await self._sales_db.run(self.ledger.store, message.sales, now_ms=now_ms())
            for (device, incarnation), hwm in hwms.items():
                self.channel.send(node, SalesAck(device, incarnation, hwm))
            self._forward_now.set()
        elif isinstance(message, SkuDigest):
            if self.sku_settled:
                self._nursery.start_soon(self.sku.answer_digest, node, message.buckets)
        elif isinstance(message, SkuRequest):
            self._nursery.start_soon(self.sku.send_buckets, node, list(message.buckets))

    async def _digests(self) -> None:
        """Every till learns every mark: a lost ack is repaired, and copies carried for others are dropped."""
        while True:
            hwms = await self._sales_db.run(self.ledger.hwms)
            if hwms:
                self.channel.broadcast(SalesDigest(hwms), role="device")
            await trio.sleep(DIGEST_S)

    # ---- to and from central --------------------------------------------------------------------

    async def _forward(self, client: httpx.AsyncClient) -> None:
        """Raw sales to central in batches; marked forwarded only once central answered (it dedupes repeats)."""
        backoff = BACKOFF_FIRST_S
        while True:
            forward_now = self._forward_now = trio.Event()
            batch = await self._sales_db.run(self.ledger.unforwarded, FORWARD_BATCH)
            if not batch:
                with trio.move_on_after(FORWARD_IDLE_S):
                    await forward_now.wait()
                    await trio.sleep(FORWARD_GATHER_S)
                continue
            asked = trio.current_time()
            try:
                await central.post_sales(client, self.central_url, self.store, batch, self.credential)
                answered_s = trio.current_time() - asked
            except PosswarmError as exc:
                if self.central_error != str(exc):
                    log.warning("sales.central_unreachable", reason=str(exc), retry_s=backoff)
                self.central_error = str(exc)
                await trio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            await self._sales_db.run(self.ledger.mark_forwarded, [sale.key for sale in batch])
            self.forwarded += len(batch)
            if self.central_error:
                log.info("sales.central_back", forwarded=len(batch))
            self.central_error, backoff = None, BACKOFF_FIRST_S
            await trio.sleep(forward_pause(answered_s, len(batch), random.random()))

    async def _pull_sku(self, client: httpx.AsyncClient) -> None:
        """Follow central's catalog: catch up page by page, then long-poll for the next change."""
        caught_up, unfilled = False, None
        while True:
            asked = trio.current_time()
            wait = LONG_POLL_S if caught_up else 0.0
            try:
                cursor = await self._sku_db.run(self.replica.cursor)
                entries, next_cursor, more, snapshot = await central.sku_changes(client, self.central_url, cursor, wait)
            except PosswarmError as exc:
                log.warning("sku.central_unreachable", reason=str(exc), retry_s=self.sku_poll_s)
                caught_up, self.sku_settled = False, True
                await trio.sleep(self.sku_poll_s)
                continue
            refused_before, signed = self.signatures.refused, []
            if snapshot is not None:
                self.snapshot.take(snapshot, source=self.central_url)
            held = self.snapshot.snapshot
            if more and held is not None and held.watermark > cursor and snapshot == held and held != unfilled:
                # Far behind (a fresh cache): the snapshot's buckets whole, checked by hashing, instead of this
                # page and the rest one signature per entry and one re-hash of every bucket per page.
                if await self._fill_by_buckets(client, held):
                    continue
                # Not tried again for this snapshot (a forger on the path would hold the cache there): the
                # pages go on, each entry checked on its own.
                unfilled, refused_before = held, self.signatures.refused

            def check(newer: list[SkuEntry]) -> list[SkuEntry]:
                # Only entries newer than what is held are checked: a page asked for again after a refusal
                # costs the refused entries' checks, not the whole page's.
                good = self.signatures.accepted(newer, source=self.central_url)
                signed.extend(good)
                return good

            if entries:
                changed = await self._sku_db.run(self.replica.apply, entries, now_ms=now_ms(), check=check)
                if changed and len(signed) <= PUSH_CHANGES_MAX:
                    for batch in batches(signed):
                        self.channel.broadcast(SkuEntries(batch), role="device")
                log.info("sku.pulled", entries=len(entries), changed=changed)
            if self.signatures.refused > refused_before:
                # Not past what was refused: after a rotation this node may not hold the new root yet, and
                # the page comes again (an on-path forger can only delay changes, never make one).
                caught_up, self.sku_settled = False, True
                await trio.sleep(self.sku_poll_s)
                continue
            if next_cursor != cursor:
                await self._sku_db.run(self.replica.set_cursor, next_cursor)
            caught_up = self.sku_settled = not more
            if caught_up and not entries and trio.current_time() - asked < wait / 2:
                await trio.sleep(self.sku_poll_s)  # central answered at once: it does not long-poll

    async def _fill_by_buckets(self, client: httpx.AsyncClient, held: Snapshot) -> bool:
        """Take every bucket of central's snapshot ``held``; True once all are applied and the cursor is at its
        watermark. False (the changes path goes on from the cursor) if central fails or an entry was refused."""
        started, first, applied = trio.current_time(), 0, 0
        refused_before, vouched_before = self.signatures.refused, self.snapshot.vouched
        while first is not None:
            try:
                entries, after = await central.sku_buckets(client, self.central_url, first, held.watermark)
            except PosswarmError as exc:
                log.warning("sku.bucket_fill_failed", reason=str(exc), bucket=first)
                return False
            if entries:
                check = self.snapshot.check_for(entries, source=self.central_url)
                applied += await self._sku_db.run(self.replica.apply, entries, now_ms=now_ms(), check=check)
            if self.signatures.refused > refused_before:
                return False  # the cursor stays before what was refused
            first = after
        if held.watermark > await self._sku_db.run(self.replica.cursor):
            await self._sku_db.run(self.replica.set_cursor, held.watermark)
        await self._sku_db.run(self.replica.build_indexes)  # the fill is over (a failed one: the next lookup builds them)
        log.info("sku.filled_by_buckets", watermark=held.watermark, changed=applied,
                 vouched=self.snapshot.vouched - vouched_before, took_s=round(trio.current_time() - started, 2))
        return True

    async def status(self) -> dict:
        totals = await self._sales_db.run(self.ledger.totals)
        unforwarded = await self._sales_db.run(self.ledger.unforwarded_count)
        return {
            "sales": {"stored": totals.sales, "cents": totals.cents, "unforwarded": unforwarded,
                      "forwarded_this_run": self.forwarded, "central_error": self.central_error},
            "skus": await self._sku_db.run(self.replica.__len__),
            "sku_refused_future": self.replica.refused,
            "sku_refused_signature": self.signatures.refused,
            "sku_snapshot_watermark": self.snapshot.snapshot.watermark if self.snapshot.snapshot else None,
            "sku_vouched_by_snapshot": self.snapshot.vouched,
            "refused": dict(self.refused),
        }
