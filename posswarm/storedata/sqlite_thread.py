"""Run a store file's calls in a worker thread, one at a time (one SQLite connection per file, notes §5)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import trio

T = TypeVar("T")


class SqliteThread:
    """Serialises calls on one connection; each runs in a worker thread so trio never blocks on an fsync."""

    def __init__(self) -> None:
        self._lock = trio.Lock()

    async def run(self, fn: Callable[..., T], *args, **kwargs) -> T:
        async with self._lock:
            return await trio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))
