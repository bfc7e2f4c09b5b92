"""How the cache and a device read their gossip inbox: one message at a time, and a local fault loses nothing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from posswarm import logs
from posswarm.errors import PosswarmError
from posswarm.gossip.driver import StoreChannel

log = logs.get("storedata")


async def handle_each(channel: StoreChannel, handle: Callable[[str, object], Awaitable[None]]) -> None:
    """``handle(node, message)`` for every message that arrives, until cancelled."""
    async for received in channel.inbox:
        try:
            await handle(received.node, received.message)
        except PosswarmError as exc:  # a local file fault (disk full...): no ack goes out, the sender retries
            log.error("storedata.message_failed", kind=received.message.KIND, node=received.node, reason=str(exc))
