"""Push, not poll: a long poll on the catalog answers the moment the shelf changes, and only then."""

from __future__ import annotations

import httpx
import trio

from posswarm import http_service
from posswarm.catalog import changes
from posswarm.catalog.http import catalog_app
from posswarm.catalog.shelf import Shelf


async def test_a_long_poll_returns_on_the_next_change_and_watch_calls_back(nursery):
    shelf = Shelf()
    url = await nursery.start(http_service.run, catalog_app(shelf), "127.0.7.1", 0)
    async with httpx.AsyncClient(timeout=40) as client:
        first = (await client.get(f"{url}/catalog/changes", params={"after": ""})).json()["token"]
        with trio.fail_after(5):
            async with trio.open_nursery() as waiting:
                got = []

                async def wait():
                    got.append((await client.get(f"{url}/catalog/changes", params={"after": first})).json()["token"])

                waiting.start_soon(wait)
                await trio.sleep(0.3)  # the request is parked on the server
                assert got == []
                shelf.tuf = {"timestamp.json": b"{}"}
        assert got and got[0] != first
        seen = trio.Event()
        nursery.start_soon(lambda: changes.watch(client, lambda: url, seen.set, retry_s=0.2))
        await trio.sleep(0.3)
        shelf.tuf = {"timestamp.json": b"{1}"}
        with trio.fail_after(5):
            await seen.wait()
