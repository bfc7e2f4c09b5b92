"""The store gossip channel's trio driver: authenticated frames over TCP between a store's nodes, plus heartbeats.

TCP, not UDP: a SKU digest (1,024 x 16 B) and a push of 64 sales do not fit a 1,400-byte
datagram (notes/gossip-mdns.md §4), and a stream gives us back-pressure for free. Each node
listens on one port and opens one outgoing connection per peer; a message travels on the
sender's own connection, so the answer comes back on the other node's. Frames are a 4-byte
big-endian length then the :mod:`posswarm.gossip.frames` bytes. Delivery is best effort:
every message is either a retry-until-acked push or idempotent state, so a frame lost with
a broken connection is simply sent again by the layer above.

Only peers that proved they hold the store key get anything but a :class:`Hello`: a peer learnt
from mDNS or a seed is sent hellos (slowly, backing off) until an authenticated hello or heartbeat
comes back from it; heartbeats, sales and SKU data go to proven peers only. Incoming connections
are capped in all and per source address, and must authenticate within AUTH_S, so a flood of
connections costs a few descriptors and never the node's sales API.
"""

from __future__ import annotations

import collections
import itertools
import math
import secrets
from dataclasses import dataclass, field

import trio

from posswarm import logs
from posswarm.gossip import faults as fault_injection
from posswarm.gossip import frames
from posswarm.gossip.inbound import LENGTH, MAX_CONNECTIONS, MAX_PER_ADDRESS, Slots, read_frames
from posswarm.gossip.messages import Heartbeat, Hello, Message
from posswarm.gossip.replay import ReplayWindow
from posswarm.wallclock import now_ms

log = logs.get("gossip")

HEARTBEAT_S = 1.0
# Three missed heartbeats: a crashed till is "down" in 3.5 s instead of mDNS's ~19 min (notes §3c).
DEAD_AFTER_S = 3.5
CONNECT_TIMEOUT_S = 2.0
# A peer that accepts but never reads must not stall us: after this the connection is dropped.
SEND_TIMEOUT_S = 5.0
# Frames waiting per peer; beyond it we drop (counted) rather than block the caller.
QUEUE_FRAMES = 256
INBOX = 1024
REORDER_HOLD_S = 0.05
# Hellos to a peer not yet proven: the first at once, then backing off so a fake advert pointing
# at some other host costs that host one small frame a minute at most.
HELLO_FIRST_S = 1.0
HELLO_MAX_S = 60.0


@dataclass(frozen=True)
class Received:
    """A message from ``node`` (its node id, without the boot id) of our store."""

    node: str
    message: Message


@dataclass
class Peer:
    node_id: str
    address: str
    port: int
    role: str = ""
    last_heard: float | None = None
    up: bool = False
    # Sent us an authenticated hello or heartbeat from ``address``: only then does it get data.
    proven: bool = False
    hello_at: float = 0.0
    hello_every: float = HELLO_FIRST_S
    send: trio.MemorySendChannel | None = None
    cancel: trio.CancelScope | None = field(default=None, repr=False)


class StoreChannel:
    """One node's end of its store's gossip channel.

    ``send``/``broadcast`` never block: frames are queued per peer. Received messages
    (heartbeats excepted) arrive on :attr:`inbox`, which one task of the owner reads.
    """

    def __init__(self, *, store: str, node_id: str, role: str, secret: bytes, address: str, port: int = 0,
                 faults: fault_injection.Faults = fault_injection.NONE, seed: int | None = None,
                 max_connections: int = MAX_CONNECTIONS, max_per_address: int = MAX_PER_ADDRESS) -> None:
        frames.frame_key(secret)  # a bad secret fails at construction, not at the first frame
        self.store, self.node_id, self.role = store, node_id, role
        self.address, self.port = address, port
        self._secret = secret
        # A fresh sender id per run: the replay window has no counter-reset rule (replay.py).
        self.sender = f"{node_id}/{secrets.token_hex(4)}"
        self._counter = itertools.count(1)
        self._replay = ReplayWindow()
        self._dice = fault_injection.Dice(faults, seed)
        self.peers: dict[str, Peer] = {}
        self.dropped: collections.Counter[str] = collections.Counter()
        self.refused: collections.Counter[str] = collections.Counter()  # incoming connections closed at once
        self._slots = Slots(max_connections, max_per_address)  # incoming connections per address
        self.sent = 0
        self.received = 0
        self._inbox_send, self.inbox = trio.open_memory_channel[Received](INBOX)
        self._nursery: trio.Nursery | None = None

    # ---- life cycle ------------------------------------------------------------------------

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Listen and heartbeat until cancelled; ``started(port)`` once the listener is bound."""
        listeners = await trio.open_tcp_listeners(self.port, host=self.address)
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(trio.serve_listeners, self._serve, listeners)
            for peer in self.peers.values():
                self._start_sender(peer)
            nursery.start_soon(self._heartbeats)
            log.info("gossip.listening", address=self.address, port=self.port, sender=self.sender,
                     faults=repr(self._dice.faults) if self._dice.faults.active else "")
            task_status.started(self.port)

    # ---- peers -----------------------------------------------------------------------------

    def add_peer(self, node_id: str, address: str, port: int, role: str = "") -> None:
        """A store node to prove (from mDNS, or a seed): it gets hellos until it answers with the store key.

        Such a sighting is unauthenticated, so it never moves a proven peer that is alive (only the
        peer's own authenticated frames do) nor changes its role.
        """
        if node_id == self.node_id or not port:
            return
        peer = self.peers.get(node_id)
        if peer is not None and peer.proven and (self._is_alive(peer) or (peer.address, peer.port) == (address, port)):
            return
        self._hello(self._place(node_id, address, port, role, proven=False), trio.current_time())

    def _place(self, node_id: str, address: str, port: int, role: str, *, proven: bool) -> Peer:
        peer = self.peers.get(node_id)
        if peer is None:
            peer = self.peers[node_id] = Peer(node_id, address, port, role, proven=proven)
        else:
            if role:
                peer.role = role
            moved = (peer.address, peer.port) != (address, port)
            if moved:
                self._stop_sender(peer)
                peer.address, peer.port = address, port
            if proven != peer.proven:
                peer.proven = proven
                peer.hello_at, peer.hello_every = 0.0, HELLO_FIRST_S
            if not moved and peer.send is not None:
                return peer
        if self._nursery is not None:
            self._start_sender(peer)
        return peer

    def forget_peer(self, node_id: str) -> None:
        """mDNS lost it; an alive, proven peer stays (an unauthenticated goodbye must not cut off a till)."""
        peer = self.peers.get(node_id)
        if peer is not None and not (peer.proven and self._is_alive(peer)):
            del self.peers[node_id]
            self._stop_sender(peer)

    def _is_alive(self, peer: Peer) -> bool:
        return peer.proven and peer.last_heard is not None and trio.current_time() - peer.last_heard < DEAD_AFTER_S

    def alive(self, role: str | None = None) -> list[str]:
        """Proven peers heard within DEAD_AFTER_S, optionally of one role."""
        return sorted(
            p.node_id for p in self.peers.values() if self._is_alive(p) and (role is None or p.role == role)
        )

    def known(self, role: str | None = None) -> list[str]:
        """Proven peers, alive or not (a proven peer that went quiet may be back any moment)."""
        return sorted(p.node_id for p in self.peers.values() if p.proven and (role is None or p.role == role))

    # ---- sending ---------------------------------------------------------------------------

    def send(self, node_id: str, message: Message) -> bool:
        """Queue ``message`` for ``node_id``; False if unknown, not proven, or its queue is full (retry later)."""
        peer = self.peers.get(node_id)
        if peer is None or not peer.proven:
            return False
        return self._queue(peer, message)

    def _queue(self, peer: Peer, message: Message) -> bool:
        if peer.send is None:
            return False
        try:
            peer.send.send_nowait((message, self._encode(message)))
        except trio.WouldBlock:
            self.dropped["queue_full"] += 1
            return False
        return True

    async def send_wait(self, node_id: str, message: Message) -> bool:
        """Like :meth:`send` but wait for queue space: for bulk transfers (a whole SKU catalog)."""
        peer = self.peers.get(node_id)
        if peer is None or not peer.proven or peer.send is None:
            return False
        try:
            await peer.send.send((message, self._encode(message)))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        return True

    def broadcast(self, message: Message, role: str | None = None, *, alive_only: bool = True) -> int:
        targets = self.alive(role) if alive_only else self.known(role)
        return sum(self.send(node, message) for node in targets)

    def _encode(self, message: Message) -> bytes:
        return frames.encode(message, key=self._secret, store=self.store, sender=self.sender,
                             counter=next(self._counter))

    def _start_sender(self, peer: Peer) -> None:
        send, receive = trio.open_memory_channel(QUEUE_FRAMES)
        peer.send, peer.cancel = send, trio.CancelScope()
        self._nursery.start_soon(self._sender, peer, peer.cancel, receive)

    def _stop_sender(self, peer: Peer) -> None:
        if peer.cancel is not None:
            peer.cancel.cancel()
        peer.send = peer.cancel = None

    async def _sender(self, peer: Peer, scope: trio.CancelScope, receive: trio.MemoryReceiveChannel) -> None:
        held: tuple[Message, bytes] | None = None
        stream: trio.SocketStream | None = None
        retry_at = 0.0
        with scope:
            try:
                while True:
                    with trio.move_on_after(REORDER_HOLD_S if held else math.inf) as waited:
                        item = await receive.receive()
                    if waited.cancelled_caught:  # nothing came within the hold time: let the held frame go
                        out, held = [held[1]], None
                    else:
                        held, out = self._with_faults(item, held)
                    if not out:
                        continue
                    if stream is None:
                        if trio.current_time() < retry_at:
                            self.dropped["unreachable"] += len(out)
                            continue
                        stream = await self._connect(peer)
                        if stream is None:
                            retry_at = trio.current_time() + 1.0
                            self.dropped["unreachable"] += len(out)
                            continue
                    try:
                        with trio.fail_after(SEND_TIMEOUT_S):
                            await stream.send_all(b"".join(LENGTH.pack(len(d)) + d for d in out))
                        self.sent += len(out)
                    except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError, OSError):
                        self.dropped["send_failed"] += len(out)
                        await _close(stream)
                        stream = None
            finally:
                if stream is not None:
                    await _close(stream)

    def _with_faults(self, item: tuple[Message, bytes], held):
        """(new held frame, frames to write now) after the test-only fault dice."""
        message, data = item
        dice = self._dice
        if not dice.faults.active:
            return held, [data]
        if dice.drop():
            self.dropped["injected_drop"] += 1
            return held, []
        out = [data]
        if dice.dup():
            out.append(data if dice.coin() else self._encode(message))
        if held is None and dice.reorder():
            return (message, out[0]), out[1:]
        if held is not None:
            out.append(held[1])
        return None, out

    async def _connect(self, peer: Peer) -> trio.SocketStream | None:
        local = self.address if self.address not in ("0.0.0.0", "") else None
        try:
            with trio.fail_after(CONNECT_TIMEOUT_S):
                return await trio.open_tcp_stream(peer.address, peer.port, local_address=local)
        except (OSError, trio.TooSlowError):
            return None

    def _hello(self, peer: Peer, now: float) -> None:
        if peer.proven or now < peer.hello_at or peer.send is None:
            return
        self._queue(peer, Hello(self.node_id, self.role, self.port))
        peer.hello_at = now + peer.hello_every
        peer.hello_every = min(peer.hello_every * 2, HELLO_MAX_S)

    async def _heartbeats(self) -> None:
        while True:
            beat = self._beat()
            now = trio.current_time()
            for peer in list(self.peers.values()):
                if peer.proven:
                    self._queue(peer, beat)
                else:
                    self._hello(peer, now)
            for peer in list(self.peers.values()):
                up = self._is_alive(peer)
                if up != peer.up:
                    peer.up = up
                    log.info("gossip.peer_up" if up else "gossip.peer_down", node=peer.node_id, role=peer.role)
            await trio.sleep(HEARTBEAT_S)

    # ---- receiving -------------------------------------------------------------------------

    async def _serve(self, stream: trio.SocketStream) -> None:
        try:
            remote = stream.socket.getpeername()[0]
        except OSError:
            await _close(stream)
            return
        full = self._slots.take(remote)
        if full:
            # Closed before a byte is read: a flood costs one descriptor for an instant, nothing more.
            self.refused[full] += 1
            await _close(stream)
            return
        try:
            async with stream:
                await read_frames(stream, lambda frame: self._accept(frame, remote), dropped=self.dropped,
                                  refused=self.refused)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            self._slots.give_back(remote)

    async def _accept(self, data: bytes, remote: str) -> bool:
        """Handle one frame; True if it decoded as authentic (whatever became of it after that)."""
        try:
            frame = frames.decode(data, key=self._secret, store=self.store)
        except frames.FrameRejected as exc:
            self.dropped[exc.reason] += 1
            return False
        except Exception:  # never let what a peer sends take the node down
            self.dropped[frames.Reason.MALFORMED] += 1
            return False
        if not self._replay.accept(frame.sender, frame.counter):
            self.dropped["replay"] += 1
            return True
        node = frame.sender.partition("/")[0]
        if node == self.node_id or not node:
            self.dropped["own"] += 1
            return True
        self.received += 1
        message = frame.message
        if isinstance(message, (Heartbeat, Hello)):
            if message.node != node:
                self.dropped[frames.Reason.MALFORMED] += 1
                return True
            self._heard(node, remote, message.port, message.role, hello=isinstance(message, Hello))
            return True
        peer = self.peers.get(node)
        if peer is not None and peer.proven:
            peer.last_heard = trio.current_time()
        await self._inbox_send.send(Received(node, message))
        return True

    def _heard(self, node: str, address: str, port: int, role: str, *, hello: bool) -> None:
        """An authenticated hello or heartbeat: ``node`` is of the store, reachable at ``address:port``."""
        if not port:
            return
        before = self.peers.get(node)
        was_alive = before is not None and self._is_alive(before)
        peer = self._place(node, address, port, role, proven=True)
        for other in [p for p in self.peers.values() if not p.proven and (p.address, p.port) == (address, port)]:
            self.forget_peer(other.node_id)  # a seed placeholder (or a stale advert) for the node just proven
        now = trio.current_time()
        if hello or not was_alive:
            # Answer a hello (so the sender can prove us) and greet a newcomer, or one back from the dead,
            # now rather than at our next beat.
            self._queue(peer, self._beat())
        if not hello:
            peer.last_heard = now

    def _beat(self) -> Heartbeat:
        return Heartbeat(self.node_id, self.role, now_ms(), self.port)

    def stats(self) -> dict:
        return {
            "port": self.port, "sent": self.sent, "received": self.received, "dropped": dict(self.dropped),
            "connections": self._slots.total, "refused": dict(self.refused),
            "peers": {p.node_id: {"role": p.role, "alive": self._is_alive(p), "proven": p.proven}
                      for p in self.peers.values()},
        }


async def _close(stream: trio.SocketStream) -> None:
    with trio.move_on_after(1) as scope:
        scope.shield = True
        await stream.aclose()
