"""Push, not poll: ``GET /catalog/changes?after=TOKEN`` answers as soon as what the catalog offers changes.

A follower (a cache watching central, a device watching its cache) keeps one such request open; the
server answers with a new token the moment its shelf changes (central's signed state, a release or a
rollout), or with the same token after ``WAIT_S``, and the follower polls at once on a new token. So a
release reaches a store in the time its bytes need, not a poll interval per hop; the regular poll
stays as the fallback. A token is ``<boot>:<generation>``: after a server restart every token is new.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from urllib.parse import urlencode

import httpx
import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from posswarm.catalog.client import get_bounded
from posswarm.catalog.shelf import Shelf
from posswarm.errors import PosswarmError

SOURCE_CHECK_S = 0.5
WAIT_S = 25.0  # under common proxy and NAT idle timeouts (30-60 s)
MAX_WAITERS = 20_000  # open waits a server keeps; beyond, a waiter is answered at once (it polls as before)


class ShelfChanges:
    """Wakes every waiter when ``shelf`` changes."""

    def __init__(self, shelf: Shelf) -> None:
        self.shelf = shelf
        self.boot = secrets.token_hex(4)
        self._event = trio.Event()
        self.waiting = 0
        shelf.on_change(self._wake)

    def token(self) -> str:
        return f"{self.boot}:{self.shelf.generation}"

    def _wake(self) -> None:
        self._event.set()
        self._event = trio.Event()

    async def wait(self, after: str, timeout: float = WAIT_S) -> str:
        if after != self.token() or self.waiting >= MAX_WAITERS:
            return self.token()
        self.waiting += 1
        try:
            with trio.move_on_after(timeout):
                await self._event.wait()
        finally:
            self.waiting -= 1
        return self.token()


def route(changes: ShelfChanges) -> Route:
    async def wait(request: Request) -> Response:
        after = request.query_params.get("after", "")[:64]
        return JSONResponse({"token": await changes.wait(after)})

    return Route("/catalog/changes", wait)


async def watch(client: httpx.AsyncClient, source: Callable[[], str | None], on_change: Callable[[], None], *,
                retry_s: float) -> None:
    """Keep a long poll open on the current ``source()`` and call ``on_change()`` when its token moves.

    A source without the route (an older server) or a failing one is asked again after ``retry_s``:
    the follower's own poll goes on meanwhile, so nothing depends on this.
    """
    token, asked = "", None
    while True:
        base = source()
        if base is None:  # no source answered yet: look again soon (a local check, no request)
            await trio.sleep(min(retry_s, SOURCE_CHECK_S))
            continue
        if base != asked:
            token, asked = "", base  # a new source's tokens say nothing about the last one's
        url = f"{base.rstrip('/')}/catalog/changes?{urlencode({'after': token})}"
        try:
            body = await get_bounded(client, url, 4096, what=f"catalog changes at {base}", timeout=WAIT_S + 10)
            new = json.loads(body)["token"]
            if not isinstance(new, str):
                raise ValueError("token is not a string")
        except (PosswarmError, ValueError, KeyError, TypeError):
            token = ""
            await trio.sleep(retry_s)
            continue
        if token and new != token:
            on_change()
        token = new
