"""How the cache and a device read their gossip inbox: one message at a time, only what its sender's certificate
allows, and a local fault loses nothing."""

from __future__ import annotations

import collections
from collections.abc import Awaitable, Callable

from posswarm import logs
from posswarm.errors import PosswarmError
from posswarm.gossip.driver import StoreChannel
from posswarm.gossip.secure import RefusalLog
from posswarm.storedata.permissions import admit

log = logs.get("storedata")


async def handle_each(channel: StoreChannel, handle: Callable[[str, object], Awaitable[None]],
                      refused: collections.Counter) -> None:
    """``handle(node, message)`` for every message that arrives and that its sender may send us, until cancelled;
    the rest is counted in ``refused`` by kind and logged (a line per sender and kind a minute at most)."""
    refusals = RefusalLog(log, "storedata.refused")
    async for received in channel.inbox:
        message, why = admit(channel.role, received.node, received.role, received.message)
        if why is not None:
            refused[received.message.KIND] += 1
            refusals.note(f"{received.node}:{received.message.KIND}", why, node=received.node, role=received.role)
        if message is None:
            continue
        try:
            await handle(received.node, message)
        except PosswarmError as exc:  # a local file fault (disk full...): no ack goes out, the sender retries
            log.error("storedata.message_failed", kind=message.KIND, node=received.node, reason=str(exc))
