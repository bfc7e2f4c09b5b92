"""Serve an ASGI app (Starlette) with hypercorn under trio, over HTTP or over TLS from a context we built;
started() hands back the bound URL."""

from __future__ import annotations

import logging
import ssl
from functools import partial
from pathlib import Path

import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve

# hypercorn listens with a backlog of 100, under the thousand store caches that connect to central at once
# (posswarm-bench sales-ingest; with 4,096 none was cut off while connecting). The kernel caps it at somaxconn.
BACKLOG = 4096


class _Config(Config):
    """hypercorn's config, serving TLS from ``context`` (hypercorn would otherwise build its own from files)."""

    def __init__(self, context: ssl.SSLContext | None) -> None:
        super().__init__()
        self._context = context

    @property
    def ssl_enabled(self) -> bool:
        return self._context is not None

    def create_ssl_context(self) -> ssl.SSLContext | None:
        return self._context


def server_context(certificate: Path, key: Path) -> ssl.SSLContext:
    """A server's TLS (1.2+) from its certificate chain and key files, e.g. central's from `keys tls`."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(certificate), str(key))
    return context


async def run(app, host: str, port: int = 0, *, ssl_context: ssl.SSLContext | None = None,
              keep_alive_s: float = 5.0, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Listen on host:port (0 = any free port) until cancelled, over TLS with ``ssl_context`` if given;
    ``task_status.started(url)`` once bound (``https://`` then)."""
    config = _Config(ssl_context)
    config.bind = [f"{host}:{port}"]
    config.backlog = BACKLOG
    config.keep_alive_timeout = keep_alive_s  # hypercorn's default: 5 s
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")  # our stderr handler, not hypercorn's own
    config.errorlog.setLevel(logging.WARNING)  # its "Running on" line duplicates our own listening line
    config.graceful_timeout = 1.0
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(hypercorn_serve, app, config))
        task_status.started(binds[0])
