"""A till's store data: commit sales to the outbox, push them to the certified cache, keep the SKU replica."""

from __future__ import annotations

import collections
import math
from collections.abc import Sequence

import trio

from posswarm import logs
from posswarm.errors import PosswarmError
from posswarm.gossip.driver import StoreChannel
from posswarm.gossip.messages import SalesAck, SalesDigest, SalesPush, SkuDigest, SkuEntries
from posswarm.keys import KeyRing
from posswarm.sales.model import Sale
from posswarm.sales.outbox import Outbox, Recorded
from posswarm.sku.catalog import SkuReplica
from posswarm.sku.entry import SkuEntry
from posswarm.sku.rows import BUCKET, Row, SkuRows
from posswarm.sku.signature import SkuSignatures
from posswarm.sku.snapshot import HeldSnapshot
from posswarm.sku.transfer import apply_rows
from posswarm.storedata.inbox import handle_each
from posswarm.storedata.sqlite_thread import SqliteThread
from posswarm.wallclock import now_ms

log = logs.get("storedata")

PUSH_BATCH = 64  # un-acked sales per push (notes §2: batches of <= 64)
RESEND_S = 0.5
# A few ms after a new sale, so a burst travels in one push; well inside the 1 s p99 target.
BATCH_WAIT_S = 0.005
SKU_DIGEST_S = 2.0
# Do not ask again while entries are still arriving: the answer to the last digest is in flight.
SKU_QUIET_S = 1.0
APPLY_MAX = 50_000
# Frames of a bulk transfer arrive a few ms apart; gather them so one commit covers thousands of SKUs.
APPLY_GATHER_S = 0.05


class DeviceData:
    """Owns the outbox and SKU replica files; changed only by its own tasks and :meth:`record`."""

    def __init__(self, channel: StoreChannel, *, outbox_path: str, sku_path: str, device_id: str,
                 sku_keys: KeyRing | None = None) -> None:
        self.channel = channel
        self._outbox_path, self._sku_path, self._device_id = outbox_path, sku_path, device_id
        self.outbox: Outbox | None = None
        self.replica: SkuReplica | None = None
        self._sales_db = SqliteThread()
        self._sku_db = SqliteThread()
        self._kick = trio.Event()
        self._last_entries = -1e9
        self._sku_applying = False  # rows received and not applied yet (held back, or in the replica's thread)
        self.refused: collections.Counter[str] = collections.Counter()  # gossip messages refused, by kind
        self._sku_in, self._sku_out = trio.open_memory_channel[tuple[str, SkuEntries]](math.inf)
        # Central's signature, checked before an entry is applied (no keys given: every entry is refused);
        # a bulk transfer's entries are checked by central's signed snapshot instead, bucket by bucket.
        self.signatures = SkuSignatures(sku_keys or KeyRing([]))
        self.snapshot = HeldSnapshot(self.signatures)

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        self.outbox = await trio.to_thread.run_sync(Outbox, self._outbox_path, self._device_id)
        self.replica = await trio.to_thread.run_sync(SkuReplica, self._sku_path)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(handle_each, self.channel, self._handle, self.refused)
                nursery.start_soon(self._push)
                nursery.start_soon(self._ask_sku)
                nursery.start_soon(self._apply_sku)
                log.info("storedata.device", incarnation=self.outbox.incarnation, skus=len(self.replica))
                task_status.started(self)
        finally:
            with trio.CancelScope(shield=True):
                await self._sales_db.run(self.outbox.close)
                await self._sku_db.run(self.replica.close)

    # ---- the local API's calls --------------------------------------------------------------

    async def record(self, lines: Sequence[tuple[str, int, int]], tenders: Sequence[tuple[str, int]],
                     txn: str | None = None) -> Recorded:
        """Commit a sale (fsync) and return it, or the one already recorded under ``txn``; the push starts at once."""
        recorded = await self._sales_db.run(self.outbox.record, lines, tenders, now_ms(), txn)
        self._kick.set()
        return recorded

    async def last_sale(self) -> Sale | None:
        return await self._sales_db.run(self.outbox.last)

    async def lookup(self, code_or_barcode: str) -> SkuEntry | None:
        return await self._sku_db.run(self.replica.get, code_or_barcode)

    # ---- sales --------------------------------------------------------------------------------

    def _cache(self) -> str | None:
        """The node whose certificate says it is the cache of our store (a heartbeat's claim counts for nothing)."""
        alive = self.channel.alive("cache")
        if alive:
            return alive[0]
        known = self.channel.known("cache")
        return known[0] if known else None

    async def _push(self) -> None:
        """Resend every un-acked sale until the cache acks it (at-least-once; every hop dedupes)."""
        while True:
            kick = self._kick = trio.Event()  # a sale committed while we push below wakes the next round
            try:
                await self._push_once()
            except PosswarmError as exc:  # the outbox file failed; the sales in it are retried next round
                log.error("sales.push_failed", reason=str(exc))
            with trio.move_on_after(RESEND_S):
                await kick.wait()
                await trio.sleep(BATCH_WAIT_S)

    async def _push_once(self) -> None:
        # Only our own sales, and only to the certified cache: it takes no other till's sales from us (a stolen
        # till must not speak for its neighbours), so copying sales to a fellow till would protect nothing.
        own = await self._sales_db.run(self.outbox.unacked, PUSH_BATCH)
        cache = self._cache()
        if cache and own:
            self.channel.send(cache, SalesPush(tuple(own)))

    # ---- messages -----------------------------------------------------------------------------

    async def _handle(self, node: str, message) -> None:
        """The certified cache's message (posswarm/storedata/permissions.py let through only what it may send)."""
        if isinstance(message, SalesAck):
            await self._settle({(message.device, message.incarnation): message.hwm})
        elif isinstance(message, SalesDigest):
            await self._settle(message.hwms)
        elif isinstance(message, SkuEntries):
            self._last_entries = trio.current_time()
            self._sku_in.send_nowait((node, message))

    async def _settle(self, hwms) -> None:
        own, dropped = await self._sales_db.run(self.outbox.settle, hwms)
        if own or dropped:
            log.debug("sales.acked", own=own, carried_dropped=dropped)

    async def _apply_sku(self) -> None:
        """Apply what arrived in as few transactions as it allows: a fresh till gets 100k SKUs in ~75 frames.

        Whoever sent them (the cache, a fellow till), only entries central vouched for are applied: by the
        signed snapshot that came with the transfer for whole buckets, by each entry's signature otherwise."""
        carried: list[Row] = []
        senders: set[str] = set()
        while True:
            batch, full, got = list(carried), False, False
            while not full:
                # Nothing held: wait for the next frame however long; else only while frames keep coming.
                with trio.move_on_after(APPLY_GATHER_S if batch else math.inf) as gap:
                    node, message = await self._sku_out.receive()
                    if message.snapshot is not None:
                        self.snapshot.take(message.snapshot, source=node)
                    batch += SkuRows.of(message.entries).rows  # as decoded: no entry object each
                    senders.add(node)
                    full, got = len(batch) >= APPLY_MAX, True
                if gap.cancelled_caught:
                    break
            # The cache sends bucket after bucket: a batch's last bucket may go on in the next frame (full, or a gap
            # on a loaded host), and the snapshot vouches only for a bucket received whole, so it waits for the rest
            # (a round that brings no frame applies it as it is).
            carried = _last_bucket(batch) if full or got else []
            batch = batch[: len(batch) - len(carried)]
            source, senders = ",".join(sorted(senders)), set(senders if carried else ())
            self._sku_applying = True
            try:
                changed = await self._sku_db.run(apply_rows, self.replica, self.snapshot, batch, now_ms=now_ms(),
                                                 source=source)
            except PosswarmError as exc:  # anti-entropy sends these again once the file is writable
                log.error("sku.apply_failed", entries=len(batch), reason=str(exc))
                continue
            finally:
                self._sku_applying = bool(carried)
            self._last_entries = trio.current_time()
            if changed:
                log.debug("sku.applied", received=len(batch), changed=changed)

    async def _ask_sku(self) -> None:
        """Anti-entropy: send our digest to the certified cache, the only node we take SKU entries from."""
        last_sent, last_target = -1e9, None
        while True:
            target = self._cache() if self.channel.alive("cache") else None
            now = trio.current_time()
            # Not while frames received wait to be applied: the cache sends faster than a fresh till applies (1M SKUs:
            # ~20 s behind), and a digest then would have it send every bucket of that backlog again (measured: 16 % of
            # the till's CPU went to merging those repeats).
            quiet = (now - self._last_entries >= SKU_QUIET_S and not self._sku_applying
                     and self._sku_out.statistics().current_buffer_used == 0)
            if quiet and not self.replica.indexed:  # a bulk fill is over: its lookup indexes now, not at a sale's scan
                await self._sku_db.run(self.replica.build_indexes)
            due = now - last_sent >= SKU_DIGEST_S and quiet
            if target and (due or target != last_target):
                digests = await self._sku_db.run(self.replica.bucket_digests)
                if self.channel.send(target, SkuDigest(tuple(digests))):
                    last_sent, last_target = now, target
            await trio.sleep(0.25)

    async def status(self) -> dict:
        counts = await self._sales_db.run(self.outbox.counts)
        skus = await self._sku_db.run(self.replica.__len__)
        return {"sales": counts, "skus": skus, "sku_refused_future": self.replica.refused,
                "sku_refused_signature": self.signatures.refused, "sku_vouched_by_snapshot": self.snapshot.vouched,
                "incarnation": self.outbox.incarnation,
                "refused": dict(self.refused)}


def _last_bucket(batch: list[Row]) -> list[Row]:
    """The rows at the end of ``batch`` in the same bucket as its last one (none if that is all of it)."""
    if not batch:
        return []
    last = batch[-1][BUCKET]
    start = len(batch)
    while start > 0 and batch[start - 1][BUCKET] == last:
        start -= 1
    return batch[start:] if start > 0 else []
