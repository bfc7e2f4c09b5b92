"""Every session event to every subscriber, in order; one that falls behind loses the newest, never stalls."""

from __future__ import annotations

import trio

from posswarm import logs
from posswarm.torrent.alerts import Event

log = logs.get("torrent")


class Subscribers:
    """The channels of everyone listening to one torrent session."""

    def __init__(self) -> None:
        self._channels: list[trio.MemorySendChannel] = []

    def subscribe(self, buffer: int) -> trio.MemoryReceiveChannel:
        send, receive = trio.open_memory_channel(buffer)
        self._channels.append(send)
        return receive

    def send(self, event: Event) -> None:
        for send in list(self._channels):
            try:
                send.send_nowait(event)
            except trio.WouldBlock:
                log.warning("session.subscriber_behind", dropped=type(event).__name__)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._channels.remove(send)

    def close(self) -> None:
        for send in self._channels:
            send.close()
        self._channels = []
