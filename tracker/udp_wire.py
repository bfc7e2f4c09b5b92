"""UDP tracker wire format (BEP 15, with BEP 41 URL data): datagram bytes in, datagram bytes out."""

from __future__ import annotations

import dataclasses
import ipaddress
import struct
from collections.abc import Iterable

import blake3

from tracker import announce
from tracker.announce import Announce, BadRequest

PROTOCOL_ID = 0x41727101980  # BEP 15's magic constant opening every connect request
CONNECT, ANNOUNCE, SCRAPE, ERROR = 0, 1, 2, 3
UDP_EVENTS = {0: "", 1: "completed", 2: "started", 3: "stopped"}
MAX_DATAGRAM = 2048  # an announce is 98 bytes plus BEP 41 URL data; anything bigger is not a tracker request
MAX_SCRAPE_HASHES = 74  # BEP 15: what fits in one answer below a typical 1500-byte MTU
SLOT_SECONDS = 60  # BEP 15: a connection id is good for one minute; we accept this slot and the one before

_HEADER = struct.Struct(">QII")  # connection_id, action, transaction_id
_ANNOUNCE = struct.Struct(">QII20s20sQQQIIIiH")  # 98 bytes, BEP 15 announce request


@dataclasses.dataclass(frozen=True)
class Connect:
    transaction_id: int


@dataclasses.dataclass(frozen=True)
class AnnounceRequest:
    """A checked announce: the parsed Announce plus the passkey from BEP 41 URL data, if any."""

    transaction_id: int
    connection_id: int
    announce: Announce
    passkey: str | None


@dataclasses.dataclass(frozen=True)
class ScrapeRequest:
    transaction_id: int
    connection_id: int
    info_hashes: list[bytes]


class UdpBadRequest(BadRequest):
    """A datagram we must answer with an error packet; carries the transaction id to echo."""

    def __init__(self, message: str, transaction_id: int) -> None:
        super().__init__(message)
        self.transaction_id = transaction_id


class ConnectionIds:
    """Connection ids with no state per client: a keyed hash of (ip, port, time slot).

    Only a host that received our connect answer at its address can present a valid id, which is
    BEP 15's defence against spoofed source addresses; nothing is stored per connection.
    """

    def __init__(self, secret: bytes) -> None:
        if len(secret) != 32:
            raise ValueError("connection-id secret must be 32 bytes")
        self._secret = secret

    def issue(self, ip: str, port: int, now: float) -> int:
        return self._id(ip, port, int(now // SLOT_SECONDS))

    def valid(self, connection_id: int, ip: str, port: int, now: float) -> bool:
        slot = int(now // SLOT_SECONDS)
        return connection_id in (self._id(ip, port, slot), self._id(ip, port, slot - 1))

    def _id(self, ip: str, port: int, slot: int) -> int:
        message = announce.packed_ip(ip) + port.to_bytes(2, "big") + slot.to_bytes(8, "big", signed=True)
        return int.from_bytes(blake3.blake3(message, key=self._secret).digest(8), "big")


def parse_header(data: bytes) -> tuple[int, int, int] | None:
    """(connection_id, action, transaction_id) of a datagram that could be BEP 15; None for what is not.

    Only a connect with the magic, an announce or a scrape of a sane size pass: anything else is
    not a tracker request at all, and answering it would make us a reflector.
    """
    if not 16 <= len(data) <= MAX_DATAGRAM:
        return None
    connection_id, action, tid = _HEADER.unpack_from(data)
    if action == CONNECT:
        return (connection_id, action, tid) if connection_id == PROTOCOL_ID else None
    return (connection_id, action, tid) if action in (ANNOUNCE, SCRAPE) else None


def parse_request(
    data: bytes, sender_ip: str, *, max_numwant: int = 200
) -> Connect | AnnounceRequest | ScrapeRequest | None:
    """One datagram -> a request; None for what deserves no answer; UdpBadRequest for an error packet.

    The connection id is *not* checked here: that needs the clock and the secret, the driver's
    job, and the driver checks it before it calls this, so no error goes to an unproven address.
    """
    head = parse_header(data)
    if head is None:
        return None
    connection_id, action, tid = head
    if action == CONNECT:
        return Connect(tid)
    if action == ANNOUNCE:
        if len(data) < _ANNOUNCE.size:
            raise UdpBadRequest(f"announce is {len(data)} bytes, expected at least {_ANNOUNCE.size}", tid)
        (_, _, _, info_hash, peer_id, downloaded, left, uploaded, event, _ip, _key, numwant, port) = (
            _ANNOUNCE.unpack_from(data)
        )
        if event not in UDP_EVENTS:
            raise UdpBadRequest(f"unknown event {event} (expected 0-3)", tid)
        if port == 0:
            raise UdpBadRequest("port 0 is outside 1-65535", tid)
        path = _url_data(data[_ANNOUNCE.size:], tid)
        passkey, query = _passkey_and_query(path, tid)
        try:
            extras = announce.posswarm_keys(announce.first_values(query))
        except BadRequest as exc:
            raise UdpBadRequest(str(exc), tid) from None
        # The packet's ip field is ignored, as public UDP trackers do: believing it would let anyone
        # enrol third parties. posswarm nodes announce over HTTP, where ip= is their LAN address.
        a = Announce(
            info_hash=info_hash,
            peer_id=peer_id,
            ip=_plain_ip(sender_ip),
            port=port,
            uploaded=uploaded,
            downloaded=downloaded,
            left=left,
            event=UDP_EVENTS[event],
            numwant=None if numwant < 0 else min(numwant, max_numwant),
            **extras,
        )
        return AnnounceRequest(tid, connection_id, a, passkey)
    if action == SCRAPE:
        body = data[_HEADER.size:]
        if not body or len(body) % 20:
            raise UdpBadRequest(f"scrape carries {len(body)} bytes of info-hashes, expected a multiple of 20", tid)
        if len(body) // 20 > MAX_SCRAPE_HASHES:
            raise UdpBadRequest(f"scrape asks for {len(body) // 20} torrents, the limit is {MAX_SCRAPE_HASHES}", tid)
        hashes = [body[i:i + 20] for i in range(0, len(body), 20)]
        return ScrapeRequest(tid, connection_id, hashes)
    return None


def encode_connect(transaction_id: int, connection_id: int) -> bytes:
    return struct.pack(">IIQ", CONNECT, transaction_id, connection_id)


def encode_announce(
    transaction_id: int, *, interval: int, complete: int, incomplete: int,
    peers: Iterable[tuple[str, int, bytes]] = (), ipv6: bool, packed: bytes | None = None,
) -> bytes:
    """BEP 15 answer; peers of the requester's address family only (6-byte v4 or 18-byte v6 entries).

    ``packed`` = those entries already encoded; it replaces ``peers``.
    """
    head = struct.pack(">IIIII", ANNOUNCE, transaction_id, interval, incomplete, complete)
    if packed is not None:
        return head + packed
    out = bytearray(head)
    for ip, port, _peer_id in peers:
        if (":" in ip) == ipv6:
            out += announce.compact_peer(ip, port)
    return bytes(out)


def encode_scrape(transaction_id: int, counts: Iterable[tuple[int, int, int]]) -> bytes:
    """``counts`` are (complete, incomplete, downloaded) per asked hash, in order; BEP 15 sends seeders, completed, leechers."""
    out = bytearray(struct.pack(">II", SCRAPE, transaction_id))
    for complete, incomplete, downloaded in counts:
        out += struct.pack(">III", complete, downloaded, incomplete)
    return bytes(out)


def encode_error(transaction_id: int, message: str, *, limit: int = 520) -> bytes:
    """An error packet of at most ``limit`` bytes (the message is cut to fit)."""
    return (struct.pack(">II", ERROR, transaction_id) + message.encode("utf-8", "replace"))[:max(8, limit)]


def _url_data(options: bytes, tid: int) -> bytes:
    # BEP 41: option 0 ends the list, 1 is padding, 2 is a length-prefixed piece of the URL's path+query.
    path, i = bytearray(), 0
    while i < len(options):
        kind = options[i]
        if kind == 0:
            break
        if kind == 1:
            i += 1
            continue
        if kind != 2 or i + 1 >= len(options):
            raise UdpBadRequest(f"unknown BEP 41 option {kind}", tid)
        length = options[i + 1]
        path += options[i + 2:i + 2 + length]
        i += 2 + length
    return bytes(path)


def _passkey_and_query(path: bytes, tid: int) -> tuple[str | None, bytes]:
    route, _, query = path.partition(b"?")
    try:
        return announce.passkey_of(route.decode("ascii")), query
    except (UnicodeDecodeError, BadRequest) as exc:
        message = str(exc) if isinstance(exc, BadRequest) else "URL path is not ASCII"
        raise UdpBadRequest(message, tid) from None


def _plain_ip(ip: str) -> str:
    if ":" not in ip:
        return ip  # the kernel's own dotted IPv4 text is already canonical
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)
