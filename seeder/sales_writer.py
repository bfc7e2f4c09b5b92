"""Group commit for central's sales: one task owns the sales store, and the batches that arrive while it writes go
into its next transaction together, each answered only once that transaction committed."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import trio

from posswarm import logs
from posswarm.errors import PosswarmError
from posswarm.sales.model import Sale

log = logs.get("seeder.sales")

# One transaction holds at most this many sales, so a batch waits about one such transaction behind the one being
# written: 10,000 took 0.7-0.9 s to COPY, insert and commit into PostgreSQL (1,000: 0.12 s) on the shared 2-core
# machine at load average 10, 0.07-0.10 s of it central's CPU.
ROUND_SALES = 10_000
# Batches queued beyond this wait for room before they are taken (each holds its parsed sales in memory).
MAX_WAITING = 4096


class _Store(Protocol):  # seeder.sales.SalesStore, which imports this module
    def ingest_many(self, batches: Sequence[tuple[str, Sequence[Sale]]]) -> list[tuple[int, int]]: ...
    def totals(self) -> tuple[int, int]: ...


@dataclass(eq=False)
class _Waiting:
    store: str
    sales: Sequence[Sale]
    done: trio.Event = field(default_factory=trio.Event)
    outcome: tuple[int, int] = (0, 0)
    error: str | None = None


class SalesWriter:
    """Central's one writer of sales: :meth:`ingest` queues a batch and returns once it is committed."""

    def __init__(self, store: _Store, *, round_sales: int = ROUND_SALES) -> None:
        self.store = store
        self.round_sales = round_sales
        self._send, self._receive = trio.open_memory_channel[_Waiting](MAX_WAITING)
        self._lock = trio.Lock()  # one connection: the writer's rounds and the operator's reads take turns

    async def ingest(self, store: str, sales: Sequence[Sale]) -> tuple[int, int]:
        """(newly stored, duplicates) once the transaction holding the batch committed; PosswarmError if it failed."""
        waiting = _Waiting(store, sales)
        await self._send.send(waiting)
        await waiting.done.wait()
        if waiting.error is not None:
            raise PosswarmError(waiting.error)
        return waiting.outcome

    async def totals(self) -> tuple[int, int]:
        async with self._lock:
            return await trio.to_thread.run_sync(self.store.totals)

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started(self)
        async for first in self._receive:
            batch, count = [first], len(first.sales)
            while count < self.round_sales:
                try:
                    waiting = self._receive.receive_nowait()
                except trio.WouldBlock:
                    break
                batch.append(waiting)
                count += len(waiting.sales)
            await self._write(batch)

    async def _write(self, batch: list[_Waiting]) -> None:
        started = time.monotonic()
        try:
            async with self._lock:
                outcomes = await trio.to_thread.run_sync(self.store.ingest_many, [(w.store, w.sales) for w in batch])
        except (PosswarmError, sqlite3.Error) as exc:
            if len(batch) > 1:  # alone, a batch the database refuses fails only its own store, not the others
                log.warning("sales.round_failed", batches=len(batch), reason=str(exc), retry="one batch at a time")
                for waiting in batch:
                    await self._write([waiting])
                return
            log.error("sales.store_failed", store=batch[0].store, reason=str(exc))
            batch[0].error = str(exc)
            batch[0].done.set()
            return
        log.debug("sales.committed", batches=len(batch), sales=sum(len(w.sales) for w in batch),
                  ms=round((time.monotonic() - started) * 1000, 1))
        for waiting, outcome in zip(batch, outcomes, strict=True):
            waiting.outcome = outcome
            waiting.done.set()
