"""SKU anti-entropy on a node: answer a peer's bucket digests with the entries of the buckets that differ."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

import trio

from posswarm import logs
from posswarm.errors import PosswarmError
from posswarm.gossip.driver import StoreChannel
from posswarm.gossip.messages import SkuEntries
from posswarm.sku.catalog import SkuReplica, differing_buckets
from posswarm.sku.entry import SIGNATURE_SIZE, SkuEntry
from posswarm.sku.rows import Row, SkuRows
from posswarm.sku.snapshot import Snapshot
from posswarm.storedata.sqlite_thread import SqliteThread

log = logs.get("storedata")

# Frames are capped at 256 KiB (frames.MAX_FRAME); fill one to ~192 KiB by a generous per-entry estimate,
# which leaves room for the catalog snapshot (snapshot.MAX_WIRE, ~18 KiB) the first frame carries.
BATCH_BYTES = 192 * 1024
# Half of what it was when slices were read one after another: with one read ahead, as many entries are held.
READ_BUCKETS = 64
SIGNED_COST = SIGNATURE_SIZE + 16 + 4
T = TypeVar("T")


def _cost(code: str, barcode: str, name: str, tax_class: str, origin: str) -> int:
    # msgpack costs at most 4 bytes of header per str field; names can be 4 bytes per character;
    # central's signature and key id add 64 + 16 bytes and their headers.
    return 48 + SIGNED_COST + len(code) + len(barcode) + 4 * len(name) + len(tax_class) + len(origin)


def _cut(items: Iterable[T], cost: Callable[[T], int]) -> Iterator[list[T]]:
    batch: list[T] = []
    size = 0
    for item in items:
        weight = cost(item)
        if batch and size + weight > BATCH_BYTES:
            yield batch
            batch, size = [], 0
        batch.append(item)
        size += weight
    if batch:
        yield batch


def batches(entries: Iterable[SkuEntry]) -> Iterator[tuple[SkuEntry, ...]]:
    """Cut entries into frame-sized groups, keeping their (bucket) order so each apply touches few buckets."""
    for batch in _cut(entries, lambda e: _cost(e.code, e.barcode, e.name, e.tax_class, e.origin)):
        yield tuple(batch)


def row_batches(rows: Iterable[Row]) -> Iterator[SkuRows]:
    """:func:`batches` for rows as a replica holds them (posswarm/sku/rows.py)."""
    for batch in _cut(rows, lambda r: _cost(r[0], r[5], r[6], r[8], r[3])):
        yield SkuRows(batch)


class SkuServer:
    """Sends a peer what it lacks; one transfer per peer at a time, so a slow fresh till is not flooded twice."""

    def __init__(self, channel: StoreChannel, replica: SkuReplica, db: SqliteThread,
                 snapshot: Callable[[], Snapshot | None] = lambda: None) -> None:
        self.channel, self.replica, self.db = channel, replica, db
        self.snapshot = snapshot  # central's newest checked catalog snapshot: the first frame of a transfer carries it
        self._busy: set[str] = set()
        self.entries_sent = 0

    async def answer_digest(self, node: str, theirs: tuple[bytes, ...]) -> None:
        if node in self._busy:
            return
        mine = await self.db.run(self.replica.bucket_digests)
        try:
            buckets = differing_buckets(mine, theirs)
        except PosswarmError as exc:
            log.warning("sku.digest_refused", node=node, reason=str(exc))
            return
        await self.send_buckets(node, buckets)

    async def send_buckets(self, node: str, buckets: list[int]) -> None:
        if not buckets or node in self._busy:
            return
        self._busy.add(node)
        snapshot = self.snapshot()
        try:
            async with trio.open_nursery() as nursery:
                # The next slice is read while this one is sent: read one after another, each pause (128 buckets of
                # 1M SKUs are ~125k entries, ~3 s of the cache's CPU at the 24 us an entry measured in process) left
                # the till idle, and longer than SKU_QUIET_S it looks to the till like the end of the transfer.
                read, slices = trio.open_memory_channel[list[Row]](0)
                nursery.start_soon(self._read, buckets, read)
                async for rows in slices:
                    for batch in row_batches(rows):  # rows as held: the till checks them, so no entry object here
                        if not await self.channel.send_wait(node, SkuEntries(batch, snapshot)):
                            nursery.cancel_scope.cancel()
                            return
                        snapshot = None
                        self.entries_sent += len(batch)
        finally:
            self._busy.discard(node)

    async def _read(self, buckets: list[int], read: trio.MemorySendChannel[list[Row]]) -> None:
        async with read:
            for start in range(0, len(buckets), READ_BUCKETS):
                await read.send(await self.db.run(self.replica.rows_in, buckets[start : start + READ_BUCKETS]))
