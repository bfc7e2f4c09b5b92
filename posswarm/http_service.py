"""Serve an ASGI app (Starlette) with hypercorn under trio; started() hands back the bound URL."""

from __future__ import annotations

import logging
from functools import partial

import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve


async def run(app, host: str, port: int = 0, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Listen on host:port (0 = any free port) until cancelled; ``task_status.started(url)`` once bound."""
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")  # our stderr handler, not hypercorn's own
    config.errorlog.setLevel(logging.WARNING)  # its "Running on" line duplicates our own listening line
    config.graceful_timeout = 1.0
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(hypercorn_serve, app, config))
        task_status.started(binds[0])
