"""The store gossip channel's trio driver: frames over mutual TLS between a store's certified nodes, plus heartbeats.

TCP, not UDP: a SKU digest (1,024 x 16 B) and a push of 64 sales do not fit a 1,400-byte
datagram (notes/gossip-mdns.md §4), and a stream gives us back-pressure for free. Each node
listens on one port and opens one outgoing connection per peer; a message travels on the
sender's own connection, so the answer comes back on the other node's. Every connection is
TLS 1.3 with both nodes' certificates (posswarm/gossip/secure.py): encrypted, and who a peer is
(node id, role, store) comes from its certificate, never from what its frames say. Frames are a
4-byte big-endian length then the :mod:`posswarm.gossip.frames` bytes. Delivery is best effort:
every message is either a retry-until-acked push or idempotent state, so a frame lost with
a broken connection is simply sent again by the layer above.

A peer learnt from mDNS or a seed is a hint: it is sent hellos (slowly, backing off), which means
connecting and checking its certificate; only once a handshake proved who is there is it a peer
(``proven``) that gets heartbeats, sales and SKU data, under the name and role its certificate gives.
Incoming connections are capped in all and per source address, and must finish the handshake within
AUTH_S, so a flood of connections costs a few descriptors and never the node's sales API.
"""

from __future__ import annotations

import collections
import datetime
import itertools
import math
import secrets

import trio

from posswarm import logs
from posswarm.gossip import faults as fault_injection
from posswarm.gossip import frames, secure
from posswarm.gossip.inbound import AUTH_S, LENGTH, MAX_CONNECTIONS, MAX_PER_ADDRESS, Slots, read_frames
from posswarm.gossip.messages import Heartbeat, Hello, Message
from posswarm.gossip.peer import HELLO_FIRST_S, Peer, Received
from posswarm.gossip.replay import ReplayWindow
from posswarm.identity.certificate import CertifiedNode
from posswarm.identity.credential import Credential
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
HELLO_MAX_S = 60.0  # hellos back off from HELLO_FIRST_S to this


class StoreChannel:
    """One node's end of its store's gossip channel.

    ``send``/``broadcast`` never block: frames are queued per peer. Received messages
    (heartbeats excepted) arrive on :attr:`inbox`, which one task of the owner reads.
    """

    def __init__(self, *, credential: Credential, address: str, port: int = 0,
                 faults: fault_injection.Faults = fault_injection.NONE, seed: int | None = None,
                 max_connections: int = MAX_CONNECTIONS, max_per_address: int = MAX_PER_ADDRESS) -> None:
        self._tls = secure.Contexts(credential)  # an unreadable credential fails here, not at the first peer
        me = credential.identity
        self.store, self.node_id, self.role = me.store, me.node_id, me.role
        self.address, self.port = address, port
        self._refusals = secure.RefusalLog(log)
        # A fresh sender id per run: the replay window has no counter-reset rule (replay.py).
        self.sender = f"{self.node_id}/{secrets.token_hex(4)}"
        self._counter = itertools.count(1)
        self._replay = ReplayWindow()
        self._dice = fault_injection.Dice(faults, seed)
        self.peers: dict[str, Peer] = {}
        self.dropped: collections.Counter[str] = collections.Counter()
        # Connections closed at once or after the handshake (caps, deadline, certificates), by reason.
        self.refused: collections.Counter[str] = collections.Counter()
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

    def add_peer(self, node_id: str, address: str, port: int) -> None:
        """A hint (from mDNS, or a seed) of a store node: it gets hellos until a handshake shows its certificate.

        Such a sighting is unauthenticated, so it never moves a proven peer that is alive (only the
        peer's own certified connections do) and says nothing about its role.
        """
        if node_id == self.node_id or not port:
            return
        peer = self.peers.get(node_id)
        if peer is not None and peer.proven and (self._is_alive(peer) or (peer.address, peer.port) == (address, port)):
            return
        self._hello(self._place(node_id, address, port, "", proven=False), trio.current_time())

    def _place(self, node_id: str, address: str, port: int, role: str, *, proven: bool) -> Peer:
        peer = self.peers.get(node_id)
        if peer is None:
            peer = self.peers[node_id] = Peer(node_id, address, port, role if proven else "", proven=proven)
        else:
            if proven:
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
        return frames.encode(message, sender=self.sender, counter=next(self._counter))

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
        stream: trio.SSLStream | None = None
        who: CertifiedNode | None = None  # the certified node at the other end of ``stream``
        retry_at = 0.0
        with scope:
            try:
                while True:
                    with trio.move_on_after(REORDER_HOLD_S if held else math.inf) as waited:
                        item = await receive.receive()
                    if waited.cancelled_caught:  # nothing came within the hold time: let the held frame go
                        out, held = [held[1]], None
                    else:
                        held, out = fault_injection.apply(self._dice, item, held, self._encode, self.dropped)
                    if not out:
                        continue
                    if stream is not None and self._tls.credential.revoked.is_revoked(who) is not None:
                        await secure.close(stream)  # revoked since we dialled it: it is told nothing more
                        stream = None
                    if stream is None:
                        if trio.current_time() < retry_at:
                            self.dropped["unreachable"] += len(out)
                            continue
                        link = await self._connect(peer)
                        if link is None:
                            retry_at = trio.current_time() + 1.0
                            self.dropped["unreachable"] += len(out)
                            continue
                        stream, who = link.stream, link.peer
                    try:
                        with trio.fail_after(SEND_TIMEOUT_S):
                            await stream.send_all(b"".join(LENGTH.pack(len(d)) + d for d in out))
                        self.sent += len(out)
                    except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError, OSError):
                        self.dropped["send_failed"] += len(out)
                        await secure.close(stream)
                        stream = None
            finally:
                if stream is not None:
                    await secure.close(stream)

    async def _connect(self, peer: Peer) -> secure.Link | None:
        """A TLS connection to ``peer``, or None; what its certificate says decides who it is."""
        local = self.address if self.address not in ("0.0.0.0", "") else None
        where = f"{peer.address}:{peer.port}"
        try:
            link = await secure.dial(peer.address, peer.port, self._tls, local=local, connect_s=CONNECT_TIMEOUT_S,
                                     handshake_s=AUTH_S)
        except secure.Refused as exc:
            self.refused[exc.reason] += 1
            self._refusals.note(where, str(exc), node=peer.node_id)
            return None
        if link is None:
            return None
        who = link.peer
        if who.node_id == peer.node_id:
            self._place(peer.node_id, peer.address, peer.port, who.role, proven=True)
            return link
        await secure.close(link.stream)
        if peer.proven:  # the address of a node we know now answers with another node's certificate
            self.refused["other_node"] += 1
            self._refusals.note(where, f"certificate is for {who.describe()}, not {peer.node_id}; not sent to", node=peer.node_id)
        else:  # a hint named someone else (a stale or forged advert, a seed): the certificate says who is there
            self._certified(who, peer.address, peer.port)
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

    async def _serve(self, tcp: trio.SocketStream) -> None:
        try:
            remote = tcp.socket.getpeername()[0]
        except OSError:
            await secure.close(tcp)
            return
        full = self._slots.take(remote)
        if full:
            # Closed before a byte is read: a flood costs one descriptor for an instant, nothing more.
            self.refused[full] += 1
            await secure.close(tcp)
            return
        try:
            try:
                with trio.fail_after(AUTH_S):
                    link = await secure.handshake(tcp, self._tls, server=True)
            except trio.TooSlowError:
                self.refused["no_auth"] += 1
                return
            except secure.Refused as exc:  # nothing it sent is read
                self.refused[exc.reason] += 1
                self._refusals.note(remote, str(exc))
                return
            async with link.stream:
                await read_frames(link.stream, lambda frame: self._accept(frame, link.peer, remote),
                                  dropped=self.dropped)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            self._slots.give_back(remote)
            await secure.close(tcp)

    async def _accept(self, data: bytes, who: CertifiedNode, remote: str) -> None:
        """Handle one frame from the certified node ``who``."""
        try:
            frame = frames.decode(data)
        except frames.FrameRejected as exc:
            self.dropped[exc.reason] += 1
            return
        except Exception:  # never let what a peer sends take the node down
            self.dropped[frames.Reason.MALFORMED] += 1
            return
        node = who.node_id
        if node == self.node_id:
            self.dropped["own"] += 1
            return
        if datetime.datetime.now(datetime.UTC) >= who.not_after:  # it expired while connected: heard no more
            self.dropped["expired"] += 1
            self._refusals.note(f"expired:{node}", f"certificate of {who.describe()} expired at {who.not_after}; "
                                "enrol it again", node=node)
            return
        if (why := self._tls.credential.revoked.is_revoked(who)) is not None:  # revoked while connected
            self.dropped["revoked"] += 1
            self._refusals.note(f"revoked:{node}", why, node=node)
            return
        if not self._replay.accept(f"{node}|{frame.sender}", frame.counter):
            self.dropped["replay"] += 1
            return
        self.received += 1
        message = frame.message
        if isinstance(message, (Heartbeat, Hello)):
            if (message.node, message.role) != (node, who.role):  # e.g. a till saying it is the cache
                self.dropped["claim"] += 1
                self._refusals.note(f"claim:{node}", f"{who.describe()} says it is {message.role} {message.node:.64}; "
                              "its certificate decides, the claim is dropped", node=node)
                return
            self._heard(who, remote, message.port, hello=isinstance(message, Hello))
            return
        peer = self.peers.get(node)
        if peer is not None and peer.proven:
            peer.last_heard = trio.current_time()
        await self._inbox_send.send(Received(node, who.role, message))

    def _heard(self, who: CertifiedNode, address: str, port: int, *, hello: bool) -> None:
        """A hello or heartbeat on a certified connection: ``who`` is reachable at ``address:port``."""
        if not port:
            return
        before = self.peers.get(who.node_id)
        was_alive = before is not None and self._is_alive(before)
        peer = self._certified(who, address, port)
        now = trio.current_time()
        if hello or not was_alive:
            # Answer a hello (so the sender hears from us) and greet a newcomer, or one back from the dead,
            # now rather than at our next beat.
            self._queue(peer, self._beat())
        if not hello:
            peer.last_heard = now

    def _certified(self, who: CertifiedNode, address: str, port: int) -> Peer:
        peer = self._place(who.node_id, address, port, who.role, proven=True)
        for other in [p for p in self.peers.values() if not p.proven and (p.address, p.port) == (address, port)]:
            self.forget_peer(other.node_id)  # a seed placeholder (or a stale advert) for the node just certified
        return peer

    def _beat(self) -> Heartbeat:
        return Heartbeat(self.node_id, self.role, now_ms(), self.port)

    def stats(self) -> dict:
        return {
            "port": self.port, "sent": self.sent, "received": self.received, "dropped": dict(self.dropped),
            "connections": self._slots.total, "refused": dict(self.refused),
            "peers": {p.node_id: {"role": p.role, "alive": self._is_alive(p), "proven": p.proven}
                      for p in self.peers.values()},
        }
