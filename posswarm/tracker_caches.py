"""A till that hears of no cache (multicast blocked, no ``store.cache_url``) asks the tracker for its store's caches.

The tracker answers only with the caches of the store in the till's certificate (or its passkey's) (tracker/store_caches.py). What it
hands out joins the catalog sources as a hint: the till still verifies central's signed state, and
a wrong or dead address costs one failed poll, after which the next source is tried.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable

import httpx
import trio

from posswarm import logs
from posswarm.announce import MAX_REPLY_BYTES, NodeIdentity, caches_url, parse_caches, shown_url
from posswarm.catalog.client import get_bounded
from posswarm.errors import PosswarmError

log = logs.get("node")


class TrackerCaches:
    """Asks every ``poll_s`` while ``needed()`` says no other catalog source is known; ``on_found()`` on news."""

    def __init__(self, tracker_url: str, who: Callable[[], NodeIdentity], *, needed: Callable[[], bool],
                 on_found: Callable[[], None], poll_s: float, verify: ssl.SSLContext | bool = True) -> None:
        self.tracker_url, self._who, self._needed, self._on_found = tracker_url, who, needed, on_found
        self._verify = verify  # the announcer's: the tracker tells a certified till of its own store's caches
        self._poll_s = poll_s
        self.caches: tuple[tuple[str, int], ...] = ()
        self.last_error: str | None = None

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        # Kept across polls (httpx's default keeps 5 s): a poll on it costs the tracker no new TLS handshake.
        limits = httpx.Limits(keepalive_expiry=2 * self._poll_s)
        async with httpx.AsyncClient(timeout=10.0, verify=self._verify, limits=limits) as client:
            task_status.started(self)
            while True:
                if self._needed():
                    await self._ask(client)
                await trio.sleep(self._poll_s)

    async def _ask(self, client: httpx.AsyncClient) -> None:
        url = caches_url(self.tracker_url, self._who())
        shown = shown_url(self.tracker_url)
        try:
            found = parse_caches(await get_bounded(client, url, MAX_REPLY_BYTES, what=f"tracker {shown}"),
                                 tracker_url=shown)
        except PosswarmError as exc:  # Unreachable too: asked again next poll
            reason = str(exc).replace(url, shown)  # the passkey in the URL is a secret: never in a log line
            if self.last_error != reason:
                log.warning("tracker_caches.failed", reason=reason)
            self.last_error = reason
            return
        self.last_error = None
        if found != self.caches:
            log.info("tracker_caches.found", caches=",".join(f"{ip}:{port}" for ip, port in found))
            self.caches = found
            self._on_found()
