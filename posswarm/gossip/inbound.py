"""Incoming gossip connections: admitted within per-address and total caps, then (after the TLS handshake)
read frame by frame with each frame's length checked before a byte of it is read (a trio driver)."""

from __future__ import annotations

import collections
import struct
from collections.abc import Awaitable, Callable

import trio

from posswarm.gossip import frames

#: A frame on the wire: a 4-byte big-endian length, then the posswarm.gossip.frames bytes.
LENGTH = struct.Struct("!I")
# Peers send heartbeats every second; a connection silent this long is a stray one.
IDLE_S = 30.0
# Incoming connections held at once. A store has tens of nodes, each holding one connection to
# us (a few more while one reconnects); the node's default 1,024 descriptors also serve
# libtorrent, SQLite and the local API, so a flood must stop far below that.
MAX_CONNECTIONS = 256
MAX_PER_ADDRESS = 8
# A peer connects only when it has a frame to send: a connection that has not finished its TLS
# handshake with a certificate of our store by then is not a store node.
AUTH_S = 5.0


class Slots:
    """How many incoming connections each source address holds, against the caps."""

    def __init__(self, max_connections: int = MAX_CONNECTIONS, max_per_address: int = MAX_PER_ADDRESS) -> None:
        self.max_connections, self.max_per_address = max_connections, max_per_address
        self.held: collections.Counter[str] = collections.Counter()

    @property
    def total(self) -> int:
        return sum(self.held.values())

    def take(self, remote: str) -> str | None:
        """None when ``remote`` may have one more connection (now counted); else which cap it hit."""
        if self.total >= self.max_connections:
            return "total"
        if self.held[remote] >= self.max_per_address:
            return "per_address"
        self.held[remote] += 1
        return None

    def give_back(self, remote: str) -> None:
        self.held[remote] -= 1
        if self.held[remote] <= 0:
            del self.held[remote]


async def read_frames(stream: trio.abc.ReceiveStream, accept: Callable[[bytes], Awaitable[None]], *,
                      dropped: collections.Counter) -> None:
    """Hand each frame of ``stream`` to ``accept`` until the peer hangs up, goes idle past IDLE_S, or sends a
    bogus length."""
    buffer = bytearray()
    while True:
        # Read no further than the frame in hand: the length is checked before its bytes are read.
        if len(buffer) < LENGTH.size:
            want = LENGTH.size - len(buffer)
        else:
            (size,) = LENGTH.unpack_from(buffer)
            if size > frames.MAX_FRAME:
                # The stream cannot be resynchronised after a bogus length: hang up.
                dropped[frames.Reason.OVERSIZED] += 1
                return
            want = LENGTH.size + size - len(buffer)
        data = b""
        with trio.move_on_after(IDLE_S):
            data = await stream.receive_some(min(want, 65536))
        if not data:  # closed by the peer, or idle past IDLE_S
            return
        buffer += data
        if len(buffer) < LENGTH.size or len(buffer) < LENGTH.size + LENGTH.unpack_from(buffer)[0]:
            continue
        frame = bytes(buffer[LENGTH.size :])
        buffer.clear()
        await accept(frame)
