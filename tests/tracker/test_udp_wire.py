"""BEP 15 codec: connect/announce/scrape round trips, BEP 41 passkeys, stateless connection ids, hostile bytes."""

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tracker import udp_wire
from tracker.udp_wire import UdpBadRequest

H, P = b"\x11" * 20, b"-TR3000-abcdefghijkl"


def announce_packet(cid=7, tid=99, event=2, numwant=-1, port=51413, url=b""):
    body = struct.pack(">QII20s20sQQQIIIiH", cid, 1, tid, H, P, 10, 500, 20, event, 0, 1234, numwant, port)
    options = b""
    for i in range(0, len(url), 255):
        part = url[i:i + 255]
        options += bytes([2, len(part)]) + part
    return body + options + (b"\x00" if url else b"")


def test_connect_needs_the_magic_and_echoes_the_transaction():
    assert udp_wire.parse_request(struct.pack(">QII", udp_wire.PROTOCOL_ID, 0, 5), "10.0.0.1") == udp_wire.Connect(5)
    assert udp_wire.parse_request(struct.pack(">QII", 1234, 0, 5), "10.0.0.1") is None  # not BEP 15: silence
    assert udp_wire.parse_request(struct.pack(">QII", 1234, 9, 5), "10.0.0.1") is None  # unknown action: silence
    assert udp_wire.encode_connect(5, 42) == struct.pack(">IIQ", 0, 5, 42)


def test_announce_fields_sender_address_and_posswarm_keys_from_bep41():
    url = b"/announce/k-17?store=store-17&role=device&node=till-1&release=pos-os@2&installed=1&class=pos"
    r = udp_wire.parse_request(announce_packet(url=url), "::ffff:10.0.0.9", max_numwant=50)
    assert (r.transaction_id, r.connection_id, r.passkey) == (99, 7, "k-17")
    a = r.announce
    assert (a.info_hash, a.peer_id, a.ip, a.port, a.downloaded, a.left, a.uploaded, a.event, a.numwant) == (
        H, P, "10.0.0.9", 51413, 10, 500, 20, "started", None)
    assert (a.store, a.role, a.node, a.release, a.installed, a.device_class) == (
        "store-17", "device", "till-1", "pos-os@2", True, "pos")
    assert udp_wire.parse_request(announce_packet(numwant=5000), "10.0.0.9").announce.numwant == 200


def test_answers_pack_peers_of_the_requesters_family_and_scrape_order():
    peers = [("10.0.0.2", 6881, b""), ("fe80::1", 6882, b""), ("10.0.0.3", 6883, b"")]
    v4 = udp_wire.encode_announce(3, interval=30, complete=2, incomplete=1, peers=peers, ipv6=False)
    assert v4[:20] == struct.pack(">IIIII", 1, 3, 30, 1, 2)
    assert v4[20:] == bytes([10, 0, 0, 2]) + (6881).to_bytes(2, "big") + bytes([10, 0, 0, 3]) + (6883).to_bytes(2, "big")
    v6 = udp_wire.encode_announce(3, interval=30, complete=2, incomplete=1, peers=peers, ipv6=True)
    assert len(v6) == 20 + 18
    assert udp_wire.encode_scrape(4, [(5, 6, 7)]) == struct.pack(">IIIII", 2, 4, 5, 7, 6)  # seeders, completed, leechers
    assert udp_wire.encode_error(4, "no")[8:] == b"no"


@pytest.mark.parametrize(("packet", "reason"), [
    (announce_packet()[:60], "expected at least 98"),
    (announce_packet(event=9), "unknown event 9"),
    (announce_packet(port=0), "port 0"),
    (announce_packet(url=b"/elsewhere"), "unknown path"),
    (announce_packet(url=b"/announce?role=device"), "needs store="),
    (announce_packet() + b"\x07\x01", "unknown BEP 41 option"),
    (struct.pack(">QII", 7, 2, 8) + b"x" * 21, "multiple of 20"),
    (struct.pack(">QII", 7, 2, 8) + b"x" * 20 * 75, "the limit is 74"),
])
def test_bad_datagrams_become_error_packets_with_their_transaction(packet, reason):
    with pytest.raises(UdpBadRequest, match=reason) as caught:
        udp_wire.parse_request(packet, "10.0.0.1")
    assert caught.value.transaction_id in (99, 8)


def test_connection_ids_are_per_address_and_expire_after_two_slots():
    ids = udp_wire.ConnectionIds(b"s" * 32)
    cid = ids.issue("10.0.0.1", 6881, now=1000.0)
    assert ids.valid(cid, "10.0.0.1", 6881, now=1000.0 + udp_wire.SLOT_SECONDS)
    assert not ids.valid(cid, "10.0.0.1", 6881, now=1000.0 + 2 * udp_wire.SLOT_SECONDS + 1)
    assert not ids.valid(cid, "10.0.0.2", 6881, now=1000.0)
    assert not ids.valid(cid, "10.0.0.1", 6882, now=1000.0)
    assert not udp_wire.ConnectionIds(b"t" * 32).valid(cid, "10.0.0.1", 6881, now=1000.0)


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise_anything_but_an_error_answer(data):
    try:
        udp_wire.parse_request(data, "10.0.0.1")
    except UdpBadRequest:
        pass


@given(st.binary(max_size=200))
def test_arbitrary_bep41_options_never_crash(options):
    try:
        udp_wire.parse_request(announce_packet() + options, "10.0.0.1")
    except UdpBadRequest:
        pass
