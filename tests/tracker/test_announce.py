"""Announce/scrape wire format: parsing raw query bytes and building bencoded answers."""

from urllib.parse import quote_from_bytes, urlencode

import fastbencode
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from posswarm.errors import PosswarmError
from tracker import announce
from tracker.announce import BadRequest, parse_announce, parse_scrape

# Every byte value, including '&', '=', '%', '+' and non-UTF-8, to prove bytes survive.
INFO_HASH = bytes([0x00, 0x26, 0x3D, 0x25, 0x2B, 0xFF, 0x80, 0xC3, 0x28]) + bytes(range(200, 211))
PEER_ID = b"-LT2110-" + bytes(range(12))


def query(**fields) -> bytes:
    base = {"info_hash": INFO_HASH, "peer_id": PEER_ID, "port": 6881, "uploaded": 0, "downloaded": 0, "left": 100}
    base.update(fields)
    parts = []
    for key, value in base.items():
        if value is None:
            continue
        raw = value if isinstance(value, bytes) else str(value).encode()
        parts.append(f"{key}={quote_from_bytes(raw, safe='')}")
    return "&".join(parts).encode()


def test_standard_client_announce_is_parsed_with_binary_info_hash():
    a = parse_announce(query(event="started", compact=1, numwant=20), "192.0.2.7")
    assert a.info_hash == INFO_HASH and a.peer_id == PEER_ID
    assert (a.ip, a.port, a.left, a.event, a.numwant, a.compact) == ("192.0.2.7", 6881, 100, "started", 20, True)
    assert a.role is None and a.store is None and a.node_key == "peer-" + PEER_ID.hex()


def test_posswarm_keys_are_parsed_and_the_ip_parameter_is_kept_as_a_claim_beside_the_socket_address():
    q = query(ip="127.0.3.4", store="store-17", role="device", node="till-3", release="pos-os@2026.11",
              size=1000, wan=0, lan=400, installed=1, **{"class": "pos"})
    a = parse_announce(q, "127.0.0.1")
    # The socket's address is the peer's; ip= is only believed later, by Access (trusted proxies, own store).
    assert (a.ip, a.lan_ip, a.store, a.role, a.device_class, a.node, a.release) == (
        "127.0.0.1", "127.0.3.4", "store-17", "device", "pos", "till-3", "pos-os@2026.11")
    assert parse_announce(query(ip="127.0.0.1"), "127.0.0.1").lan_ip is None
    # A seeder listening on 0.0.0.0 says so in ip=; that is nobody's address: the socket's is used.
    assert parse_announce(query(ip="0.0.0.0"), "10.1.1.1").lan_ip is None
    assert parse_announce(query(ip="224.0.0.251"), "10.1.1.1").lan_ip is None
    assert (a.size, a.wan, a.lan, a.installed, a.node_key) == (1000, 0, 400, True, "till-3")


def test_a_tills_release_state_and_boot_slot_are_read():
    a = parse_announce(query(role="device", store="S1", node="till-1", state="staged", slot="b", boot="fell back",
                             boot_reason="never confirmed: 1 try left 0"), "10.0.0.1")
    assert (a.state, a.slot, a.boot, a.boot_reason) == ("staged", "b", "fell back", "never confirmed: 1 try left 0")
    plain = parse_announce(query(role="device", store="S1", node="till-1"), "10.0.0.1")
    assert (plain.state, plain.slot, plain.boot, plain.boot_reason) == (None, None, None, None)


def test_the_words_a_node_may_send_are_the_nodes_own():
    from posswarm.lifecycle.states import ReleaseState
    from posswarm.slots import state as slots

    assert announce.RELEASE_STATES == {s.value for s in ReleaseState}
    assert {slots.TRIAL, slots.CONFIRMED, slots.FELL_BACK, slots.REJECTED, "unconfirmed"} == announce.BOOT_VERDICTS


def test_query_written_by_python_urlencode_reads_back_spaces():
    from urllib.parse import quote_from_bytes as q

    raw = f"info_hash={q(INFO_HASH)}&".encode() + urlencode(
        {"peer_id": PEER_ID, "port": 1, "uploaded": 0, "downloaded": 0, "left": 0, "store": "store 17 north"}).encode()
    a = parse_announce(raw, "10.0.0.1")
    assert (a.store, a.info_hash, a.peer_id) == ("store 17 north", INFO_HASH, PEER_ID)


def test_ipv4_mapped_remote_address_becomes_plain_ipv4():
    assert parse_announce(query(), "::ffff:10.1.2.3").ip == "10.1.2.3"


def test_unknown_keys_from_real_clients_are_ignored():
    q = query() + b"&key=abc&supportcrypto=1&redundant=0&no_peer_id=1&corrupt=0"
    assert parse_announce(q, "10.0.0.1").left == 100


def test_numwant_is_capped():
    assert parse_announce(query(numwant=99999), "10.0.0.1", max_numwant=200).numwant == 200


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"info_hash": None}, "missing info_hash"),
        ({"info_hash": b"short"}, "info_hash is 5 bytes"),
        ({"peer_id": b"x" * 21}, "peer_id is 21 bytes"),
        ({"port": "http"}, "port="),
        ({"port": 70000}, "outside 1-65535"),
        ({"left": -1}, "left="),
        ({"left": "1e9"}, "left="),
        ({"uploaded": None}, "missing uploaded"),
        ({"event": "exploded"}, "unknown event"),
        ({"role": "king", "store": "s"}, "unknown role"),
        ({"role": "device"}, "needs store"),
        ({"release": "no-version"}, "NAME@VERSION"),
        ({"installed": "yes"}, "installed="),
        ({"ip": "not-an-ip"}, "not an IPv4 or IPv6"),
        ({"store": b"\xff\xfe"}, "not UTF-8"),
        ({"node": "x" * 500}, "at most 128"),
        ({"store": "a\nb"}, "printable"),
        ({"state": "exploded"}, "not one this tracker knows"),
        ({"slot": "c", "boot": "trial"}, "slot='c'"),
        ({"slot": "a", "boot": "maybe"}, "boot='maybe'"),
        ({"slot": "a"}, "come together"),
        ({"slot": "b", "boot": "rejected", "boot_reason": "x" * 201}, "at most 200"),
    ],
)
def test_garbage_gives_a_failure_reason(fields, reason):
    with pytest.raises(BadRequest, match=reason):
        parse_announce(query(**fields), "10.0.0.1")


def test_failure_is_a_posswarm_error_and_overlong_query_is_refused():
    assert issubclass(BadRequest, PosswarmError)
    with pytest.raises(BadRequest, match="limit is 4096"):
        parse_announce(query(node="x" * 5000), "10.0.0.1")


def test_no_address_at_all_is_a_failure():
    with pytest.raises(BadRequest, match="no peer address"):
        parse_announce(query(), None)


def test_compact_response_packs_v4_and_v6_peers():
    body = announce.encode_announce(
        interval=30, min_interval=10, complete=1, incomplete=2,
        peers=[("10.0.0.1", 6881, PEER_ID), ("::1", 7000, PEER_ID), ("127.0.3.4", 1, PEER_ID)],
    )
    d = fastbencode.bdecode(body)
    assert d[b"interval"] == 30 and d[b"min interval"] == 10 and (d[b"complete"], d[b"incomplete"]) == (1, 2)
    assert d[b"peers"] == bytes([10, 0, 0, 1, 0x1A, 0xE1, 127, 0, 3, 4, 0, 1])
    assert d[b"peers6"] == bytes(15) + b"\x01" + (7000).to_bytes(2, "big")


def test_non_compact_response_lists_dicts():
    body = announce.encode_announce(interval=30, min_interval=10, complete=0, incomplete=1,
                                    peers=[("10.0.0.1", 6881, PEER_ID)], compact=False)
    assert fastbencode.bdecode(body)[b"peers"] == [{b"ip": b"10.0.0.1", b"peer id": PEER_ID, b"port": 6881}]


def test_failure_and_scrape_encoding():
    assert fastbencode.bdecode(announce.encode_failure("missing port")) == {b"failure reason": b"missing port"}
    d = fastbencode.bdecode(announce.encode_scrape({INFO_HASH: (3, 4, 5)}))
    assert d == {b"files": {INFO_HASH: {b"complete": 3, b"incomplete": 4, b"downloaded": 5}}}


def test_scrape_parses_repeated_binary_hashes_and_rejects_bad_ones():
    other = bytes(range(20))
    q = f"info_hash={quote_from_bytes(INFO_HASH, safe='')}&info_hash={quote_from_bytes(other, safe='')}".encode()
    assert parse_scrape(q) == [INFO_HASH, other]
    assert parse_scrape(b"") == []
    with pytest.raises(BadRequest, match="info_hash is 3 bytes"):
        parse_scrape(urlencode({"info_hash": "abc"}).encode())


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.one_of(st.none(), st.sampled_from(["10.0.0.1", "::1", "junk"])))
def test_fuzz_parser_only_ever_returns_or_raises_bad_request(raw, remote):
    try:
        a = parse_announce(raw, remote)
    except BadRequest as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        assert len(a.info_hash) == 20 and 1 <= a.port <= 65535


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["info_hash", "peer_id", "port", "left", "uploaded", "downloaded", "event", "role",
                         "store", "ip", "numwant", "installed", "release", "wan"]),
        st.binary(max_size=24),
    )
)
def test_fuzz_well_formed_queries_with_random_values(fields):
    q = "&".join(f"{k}={quote_from_bytes(v, safe='')}" for k, v in fields.items()).encode()
    try:
        a = parse_announce(q, "10.0.0.1")
    except BadRequest:
        return
    assert a.info_hash == fields["info_hash"] and a.peer_id == fields["peer_id"]


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.binary(max_size=40), st.lists(st.sampled_from([b"%", b"=", b"+", b" ", b"\r\n", b"\t", b"a",
                                                                   b"F", b"0", b"9", b"g", b"_", b"\xff"]),
                                                  max_size=16).map(b"".join)))
def test_fast_percent_decoding_agrees_with_the_standard_library(raw):
    # The C-speed path (binascii's quoted-printable decoder) must decode exactly as unquote_to_bytes does.
    from urllib.parse import unquote_to_bytes

    assert announce._unquote(raw) == unquote_to_bytes(raw.replace(b"+", b" "))
    assert announce._unquote(quote_from_bytes(raw, safe="").encode()) == raw
