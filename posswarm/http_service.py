"""Serve an ASGI app (Starlette) with hypercorn under trio; started() hands back the bound URL."""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve


@dataclass(frozen=True)
class ServerTls:
    """The certificate and key a server shows; with ``client_ca``, a client certificate under it is required."""

    certificate: Path
    key: Path
    client_ca: Path | None = None


async def run(app, host: str, port: int = 0, *, tls: ServerTls | None = None,
              task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Listen on host:port (0 = any free port) until cancelled; ``task_status.started(url)`` once bound.

    With ``tls`` the URL is https:// and only TLS 1.2+ is spoken (hypercorn's defaults otherwise).
    """
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")  # our stderr handler, not hypercorn's own
    config.errorlog.setLevel(logging.WARNING)  # its "Running on" line duplicates our own listening line
    config.graceful_timeout = 1.0
    if tls is not None:
        config.certfile, config.keyfile = str(tls.certificate), str(tls.key)
        if tls.client_ca is not None:
            config.ca_certs, config.verify_mode = str(tls.client_ca), ssl.CERT_REQUIRED
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(hypercorn_serve, app, config))
        task_status.started(binds[0])
