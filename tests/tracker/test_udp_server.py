"""The UDP tracker over real loopback sockets: connect, announce, scrape, expired ids, private mode."""

import ipaddress
import socket
import struct

import pytest
import trio

from posswarm.errors import PosswarmError
from tracker import udp_server, udp_wire
from tracker.access import Access
from tracker.announce import DENIED
from tracker.config import TrackerConfig
from tracker.desk import Desk
from tracker.peerstore import MemoryPeerStore

H = b"\x22" * 20


class Clock:
    def __init__(self):
        self.now = 10_000.0

    def __call__(self):
        return self.now


async def start(nursery, access, clock):
    config = TrackerConfig(interval=30, open=access.open)
    desk = Desk(config, MemoryPeerStore(peer_ttl=90, retain=1000), access)
    host, port = await nursery.start(lambda task_status: udp_server.run(desk, "127.0.0.1", 0, clock,
                                                                        task_status=task_status))
    return desk, (host, port)


class Client:
    """A BEP 15 client on its own loopback address, so each one is a distinct peer."""

    def __init__(self, ip, tracker):
        self.sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.ip, self.tracker, self.tid = ip, tracker, 0

    async def ask(self, packet: bytes) -> bytes:
        with trio.fail_after(5):
            await self.sock.sendto(packet, self.tracker)
            return (await self.sock.recvfrom(4096))[0]

    async def connect(self) -> int:
        if self.sock.getsockname()[1] == 0:
            await self.sock.bind((self.ip, 0))
        self.tid += 1
        reply = await self.ask(struct.pack(">QII", udp_wire.PROTOCOL_ID, 0, self.tid))
        action, tid, cid = struct.unpack(">IIQ", reply)
        assert (action, tid) == (0, self.tid)
        return cid

    async def announce(self, cid, *, left=0, event=0, port=6881, url=b"") -> bytes:
        self.tid += 1
        packet = struct.pack(">QII20s20sQQQIIIiH", cid, 1, self.tid, H, self.ip.encode().ljust(20, b"-"),
                             0, left, 0, event, 0, 0, -1, port)
        if url:
            packet += bytes([2, len(url)]) + url
        return await self.ask(packet)


def peers_of(reply: bytes) -> list[tuple[str, int]]:
    body = reply[20:]
    return [(str(ipaddress.IPv4Address(body[i:i + 4])), int.from_bytes(body[i + 4:i + 6], "big"))
            for i in range(0, len(body), 6)]


def error_of(reply: bytes) -> str:
    assert struct.unpack(">I", reply[:4])[0] == udp_wire.ERROR
    return reply[8:].decode()


async def test_two_clients_find_each_other_and_scrape_counts(nursery):
    clock = Clock()
    _, tracker = await start(nursery, Access(open=True), clock)
    seed, leech = Client("127.0.0.2", tracker), Client("127.0.0.3", tracker)
    await seed.announce(await seed.connect(), left=0, event=1, url=b"/announce?node=seed")
    reply = await leech.announce(await leech.connect(), left=100, event=2, port=7000)
    action, _tid, interval, leechers, seeders = struct.unpack(">IIIII", reply[:20])
    assert (action, interval, leechers, seeders) == (1, 30, 1, 1)
    assert peers_of(reply) == [("127.0.0.2", 6881)]

    cid = await leech.connect()
    leech.tid += 1
    scrape = await leech.ask(struct.pack(">QII", cid, 2, leech.tid) + H + b"\x00" * 20)
    assert struct.unpack(">IIIIIIII", scrape) == (2, leech.tid, 1, 1, 1, 0, 0, 0)  # H: 1 seed, 1 done, 1 leech


async def test_expired_or_forged_connection_id_gets_an_error_and_garbage_gets_silence(nursery):
    clock = Clock()
    _, tracker = await start(nursery, Access(open=True), clock)
    c = Client("127.0.0.4", tracker)
    cid = await c.connect()
    assert "connect again" in error_of(await c.announce(cid ^ 1))
    clock.now += 3 * udp_wire.SLOT_SECONDS
    assert "connect again" in error_of(await c.announce(cid))
    # Garbage is not answered: the next reply the client gets is the one to its connect.
    await c.sock.sendto(b"\xff" * 40, tracker)
    await c.sock.sendto(b"\x00" * 5000, tracker)
    assert await c.connect() != cid
    assert error_of(await c.announce(await c.connect(), event=7)).startswith("unknown event 7")


async def test_private_mode_needs_a_passkey_in_bep41_url_data(nursery):
    access = Access(open=False, passkeys={"store-17": "k17"})
    access.publish([H])
    desk, tracker = await start(nursery, access, Clock())
    c = Client("127.0.0.5", tracker)
    assert error_of(await c.announce(await c.connect())) == DENIED
    assert error_of(await c.announce(await c.connect(), url=b"/announce/nope")) == DENIED
    reply = await c.announce(await c.connect(), left=5, url=b"/announce/k17")
    assert struct.unpack(">I", reply[:4])[0] == udp_wire.ANNOUNCE
    (peer,) = desk.store.records()
    assert peer.announce.store == "store-17"  # a plain client is placed in its passkey's store
    cid = await c.connect()
    c.tid += 1  # BEP 15 scrapes carry no URL data, so no passkey: refused
    assert error_of(await c.ask(struct.pack(">QII", cid, 2, c.tid) + H)) == DENIED


async def test_a_busy_udp_port_is_a_one_line_posswarm_error():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.6", 0))
        desk = Desk(TrackerConfig(open=True), MemoryPeerStore(peer_ttl=9, retain=9), Access(open=True))
        with pytest.raises(PosswarmError, match="cannot listen for UDP on 127.0.0.6"):
            await udp_server.run(desk, "127.0.0.6", busy.getsockname()[1], Clock())
