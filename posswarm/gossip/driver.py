"""The store gossip channel's trio driver: authenticated frames over TCP between a store's nodes, plus heartbeats.

TCP, not UDP: a SKU digest (1,024 x 16 B) and a push of 64 sales do not fit a 1,400-byte
datagram (notes/gossip-mdns.md §4), and a stream gives us back-pressure for free. Each node
listens on one port and opens one outgoing connection per peer; a message travels on the
sender's own connection, so the answer comes back on the other node's. Frames are a 4-byte
big-endian length then the :mod:`posswarm.gossip.frames` bytes. Delivery is best effort:
every message is either a retry-until-acked push or idempotent state, so a frame lost with
a broken connection is simply sent again by the layer above.
"""

from __future__ import annotations

import collections
import itertools
import math
import secrets
import struct
from dataclasses import dataclass, field

import trio

from posswarm import logs
from posswarm.gossip import faults as fault_injection
from posswarm.gossip import frames
from posswarm.gossip.messages import Heartbeat, Message
from posswarm.gossip.replay import ReplayWindow
from posswarm.wallclock import now_ms

log = logs.get("gossip")

LENGTH = struct.Struct("!I")
HEARTBEAT_S = 1.0
# Three missed heartbeats: a crashed till is "down" in 3.5 s instead of mDNS's ~19 min (notes §3c).
DEAD_AFTER_S = 3.5
CONNECT_TIMEOUT_S = 2.0
# A peer that accepts but never reads must not stall us: after this the connection is dropped.
SEND_TIMEOUT_S = 5.0
# Peers send heartbeats every second; a connection silent this long is a stray one.
IDLE_S = 30.0
# Frames waiting per peer; beyond it we drop (counted) rather than block the caller.
QUEUE_FRAMES = 256
INBOX = 1024
REORDER_HOLD_S = 0.05


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
    send: trio.MemorySendChannel | None = None
    cancel: trio.CancelScope | None = field(default=None, repr=False)


class StoreChannel:
    """One node's end of its store's gossip channel.

    ``send``/``broadcast`` never block: frames are queued per peer. Received messages
    (heartbeats excepted) arrive on :attr:`inbox`, which one task of the owner reads.
    """

    def __init__(self, *, store: str, node_id: str, role: str, secret: bytes, address: str, port: int = 0,
                 faults: fault_injection.Faults = fault_injection.NONE, seed: int | None = None) -> None:
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
        """A store node to talk to (from mDNS, or heard first); a changed address restarts its sender."""
        if node_id == self.node_id or not port:
            return
        peer = self.peers.get(node_id)
        if peer is not None:
            if role:
                peer.role = role
            if (peer.address, peer.port) == (address, port):
                return
            self._stop_sender(peer)
            peer.address, peer.port = address, port
        else:
            peer = self.peers[node_id] = Peer(node_id, address, port, role)
        if self._nursery is not None:
            self._start_sender(peer)

    def forget_peer(self, node_id: str) -> None:
        peer = self.peers.pop(node_id, None)
        if peer:
            self._stop_sender(peer)

    def alive(self, role: str | None = None) -> list[str]:
        """Peers heard within DEAD_AFTER_S, optionally of one role."""
        now = trio.current_time()
        return sorted(
            p.node_id for p in self.peers.values()
            if p.last_heard is not None and now - p.last_heard < DEAD_AFTER_S and (role is None or p.role == role)
        )

    def known(self, role: str | None = None) -> list[str]:
        return sorted(p.node_id for p in self.peers.values() if role is None or p.role == role)

    # ---- sending ---------------------------------------------------------------------------

    def send(self, node_id: str, message: Message) -> bool:
        """Queue ``message`` for ``node_id``; False if unknown or its queue is full (the caller retries later)."""
        peer = self.peers.get(node_id)
        if peer is None or peer.send is None:
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
        if peer is None or peer.send is None:
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

    async def _heartbeats(self) -> None:
        while True:
            beat = self._beat()
            for node in list(self.peers):
                self.send(node, beat)
            now = trio.current_time()
            for peer in list(self.peers.values()):
                up = peer.last_heard is not None and now - peer.last_heard < DEAD_AFTER_S
                if up != peer.up:
                    peer.up = up
                    log.info("gossip.peer_up" if up else "gossip.peer_down", node=peer.node_id, role=peer.role)
            await trio.sleep(HEARTBEAT_S)

    # ---- receiving -------------------------------------------------------------------------

    async def _serve(self, stream: trio.SocketStream) -> None:
        try:
            remote = stream.socket.getpeername()[0]
        except OSError:
            return
        buffer = bytearray()
        async with stream:
            try:
                while True:
                    with trio.move_on_after(IDLE_S):
                        data = await stream.receive_some(65536)
                    if not data:  # closed by the peer, or idle past IDLE_S
                        return
                    buffer += data
                    while len(buffer) >= LENGTH.size:
                        (size,) = LENGTH.unpack_from(buffer)
                        if size > frames.MAX_FRAME:
                            # The stream cannot be resynchronised after a bogus length: hang up.
                            self.dropped[frames.Reason.OVERSIZED] += 1
                            return
                        if len(buffer) < LENGTH.size + size:
                            break
                        frame = bytes(buffer[LENGTH.size : LENGTH.size + size])
                        del buffer[: LENGTH.size + size]
                        await self._accept(frame, remote)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                return

    async def _accept(self, data: bytes, remote: str) -> None:
        try:
            frame = frames.decode(data, key=self._secret, store=self.store)
        except frames.FrameRejected as exc:
            self.dropped[exc.reason] += 1
            return
        except Exception:  # never let what a peer sends take the node down
            self.dropped[frames.Reason.MALFORMED] += 1
            return
        if not self._replay.accept(frame.sender, frame.counter):
            self.dropped["replay"] += 1
            return
        node = frame.sender.partition("/")[0]
        if node == self.node_id or not node:
            self.dropped["own"] += 1
            return
        self.received += 1
        message = frame.message
        if isinstance(message, Heartbeat):
            if message.node != node:
                self.dropped[frames.Reason.MALFORMED] += 1
                return
            self._heard(node, remote, message.port, message.role)
            return
        peer = self.peers.get(node)
        if peer is not None:
            peer.last_heard = trio.current_time()
        await self._inbox_send.send(Received(node, message))

    def _heard(self, node: str, address: str, port: int, role: str) -> None:
        self.add_peer(node, address, port, role)
        peer = self.peers.get(node)
        if peer is None:
            return
        now = trio.current_time()
        if peer.last_heard is None or now - peer.last_heard >= DEAD_AFTER_S:
            # A newcomer (or one back from the dead) learns of us now, not at our next beat.
            self.send(node, self._beat())
        peer.last_heard = now

    def _beat(self) -> Heartbeat:
        return Heartbeat(self.node_id, self.role, now_ms(), self.port)

    def stats(self) -> dict:
        return {
            "port": self.port, "sent": self.sent, "received": self.received, "dropped": dict(self.dropped),
            "peers": {p.node_id: {"role": p.role, "alive": p.node_id in self.alive()} for p in self.peers.values()},
        }


async def _close(stream: trio.SocketStream) -> None:
    with trio.move_on_after(1) as scope:
        scope.shield = True
        await stream.aclose()
