"""A store peer as the gossip channel knows it, and a message received from one."""

from __future__ import annotations

from dataclasses import dataclass, field

import trio

from posswarm.gossip.messages import Message

# Hellos to a peer not yet proven: the first at once, then backing off so a fake advert pointing
# at some other host costs that host one TLS handshake attempt a minute at most.
HELLO_FIRST_S = 1.0


@dataclass(frozen=True)
class Received:
    """A message from ``node`` of our store, whose certificate says it is a ``role`` ("cache" or "device")."""

    node: str
    role: str
    message: Message


@dataclass
class Peer:
    node_id: str
    address: str
    port: int
    role: str = ""  # from its certificate, never from an advert or a frame
    last_heard: float | None = None
    up: bool = False
    # A TLS handshake showed this node's certificate (ours to it, or its to us with a hello naming this
    # address): only then does it get data.
    proven: bool = False
    hello_at: float = 0.0
    hello_every: float = HELLO_FIRST_S
    send: trio.MemorySendChannel | None = None
    cancel: trio.CancelScope | None = field(default=None, repr=False)
