"""mDNS advert <-> TXT records: round trip, rejection of foreign/garbage services, fuzz."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from posswarm.discovery.records import SERVICE_TYPE, Advert, from_service, instance_name, to_txt
from posswarm.errors import PosswarmError

TILL = Advert(
    node_id="S042-till-07", store="S042", role="device", device_class="pos", address="10.42.0.17", bt_port=6881
)
CACHE = Advert(
    node_id="S042-cache",
    store="S042",
    role="cache",
    device_class="cache",
    address="10.42.0.2",
    bt_port=6881,
    http_port=8080,
    gossip_port=7946,
)


def as_wire(advert: Advert) -> dict[bytes, bytes | None]:
    return {k.encode(): v.encode() for k, v in to_txt(advert).items()}


@pytest.mark.parametrize("advert", [TILL, CACHE])
def test_round_trip_through_txt(advert):
    assert from_service(advert.node_id, [advert.address], advert.bt_port, as_wire(advert)) == advert
    assert from_service(instance_name(advert.node_id), [advert.address], advert.bt_port, as_wire(advert)) == advert


def test_txt_carries_every_field_as_text():
    assert to_txt(CACHE) == {
        "v": "1",
        "store": "S042",
        "role": "cache",
        "class": "cache",
        "bt": "6881",
        "http": "8080",
        "gossip": "7946",
        "node": "S042-cache",
    }


def test_first_ipv4_address_wins_and_ipv6_is_skipped():
    got = from_service(TILL.node_id, ["fe80::1", "not-an-ip", "10.42.0.99", "10.42.0.17"], 6881, as_wire(TILL))
    assert got is not None and got.address == "10.42.0.99"


def test_unknown_keys_and_key_case_are_tolerated():
    txt = {k.upper(): v for k, v in as_wire(TILL).items()} | {b"future": b"x", b"flag": None}
    assert from_service(TILL.node_id, [TILL.address], 6881, txt) == TILL


def _txt_with(**changes):
    txt = as_wire(TILL)
    for key, value in changes.items():
        if value is ...:
            del txt[key.encode()]
        else:
            txt[key.encode()] = value
    return txt


@pytest.mark.parametrize(
    "txt",
    [
        _txt_with(v=b"2"),
        _txt_with(v=...),
        _txt_with(store=...),
        _txt_with(store=b""),
        _txt_with(store=b"S 042"),
        _txt_with(store=b"\xff\xfe"),
        _txt_with(role=b"seeder"),
        _txt_with(**{"class": b"x" * 64}),
        _txt_with(bt=b"6882"),  # disagrees with the SRV port
        _txt_with(bt=b"+6881"),
        _txt_with(http=b"70000"),
        _txt_with(http=b"-1"),
        _txt_with(gossip=b"0x10"),
        _txt_with(gossip=None),
        _txt_with(node=b"someone-else"),
        _txt_with(store=b"S" * 300),
    ],
)
def test_foreign_or_broken_txt_is_not_an_advert(txt):
    assert from_service(TILL.node_id, [TILL.address], 6881, txt) is None


@pytest.mark.parametrize(
    ("name", "addresses", "port"),
    [
        (TILL.node_id, [], 6881),
        (TILL.node_id, ["::1"], 6881),
        (TILL.node_id, [TILL.address], 0),
        ("S042-till-08", [TILL.address], 6881),
        ("S042-till-07._other._tcp.local.", [TILL.address], 6881),
    ],
)
def test_service_that_does_not_match_its_txt_is_not_an_advert(name, addresses, port):
    assert from_service(name, addresses, port, as_wire(TILL)) is None


@pytest.mark.parametrize(
    "changes",
    [
        {"node_id": "till 07"},
        {"node_id": "t" * 64},
        {"node_id": ""},
        {"node_id": "till..07"},
        {"node_id": ".till"},
        {"node_id": "till."},
        {"node_id": "till-\u0667"},  # a non-ASCII digit
        {"store": "S042\n"},
        {"role": "seeder"},
        {"address": "10.42.0.300"},
        {"address": "::1"},
        {"bt_port": 0},
        {"http_port": 65536},
        {"gossip_port": "7946"},
    ],
)
def test_building_an_invalid_advert_is_a_readable_error(changes):
    fields = {**TILL.__dict__, **changes}
    with pytest.raises(PosswarmError, match="mDNS advert"):
        Advert(**fields)


def test_dotted_node_id_is_fine():
    dotted = Advert(**{**TILL.__dict__, "node_id": "S042.till.07"})
    assert from_service(instance_name(dotted.node_id), [dotted.address], 6881, as_wire(dotted)) == dotted


def test_instance_name_is_under_our_service_type():
    assert instance_name("S042-till-07") == "S042-till-07." + SERVICE_TYPE == "S042-till-07._posswarm._tcp.local."


_anything = st.one_of(st.none(), st.integers(), st.text(max_size=5), st.binary(max_size=5), st.floats())


@settings(max_examples=400, deadline=None)
@given(
    name=st.one_of(st.text(max_size=80), st.just(TILL.node_id), _anything),
    addresses=st.one_of(st.lists(st.one_of(st.text(max_size=20), st.just("10.0.0.1"), _anything), max_size=3), _anything),
    port=st.one_of(st.integers(-70000, 70000), st.just(6881), _anything),
    txt=st.one_of(
        st.dictionaries(st.binary(max_size=10), st.one_of(st.none(), st.binary(max_size=300)), max_size=10),
        st.dictionaries(_anything, _anything, max_size=3),
        _anything,
    ),
)
def test_from_service_never_raises_on_arbitrary_input(name, addresses, port, txt):
    got = from_service(name, addresses, port, txt)
    assert got is None or isinstance(got, Advert)


@settings(max_examples=300, deadline=None)
@given(
    key=st.sampled_from([k.encode() for k in to_txt(TILL)]),
    value=st.one_of(st.none(), st.binary(max_size=300)),
)
def test_one_mutated_value_yields_none_or_a_valid_advert(key, value):
    txt = as_wire(TILL) | {key: value}
    got = from_service(TILL.node_id, [TILL.address], TILL.bt_port, txt)
    if got is not None:
        # Whatever was accepted must survive its own round trip.
        assert from_service(got.node_id, [got.address], got.bt_port, as_wire(got)) == got
