"""HOST:PORT parsing: what every listen address, seed list and peer address goes through."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from posswarm.endpoint import parse_endpoint
from posswarm.errors import PosswarmError


@pytest.mark.parametrize(("text", "expected"), [
    ("10.20.0.1:7946", ("10.20.0.1", 7946)),
    ("till-03.store-17.example:8080", ("till-03.store-17.example", 8080)),
    ("localhost:1", ("localhost", 1)),
    ("[::1]:6969", ("::1", 6969)),
    ("[fe80::1:2]:65535", ("fe80::1:2", 65535)),
])
def test_good_endpoints(text, expected):
    assert parse_endpoint(text, what="--listen") == expected


@pytest.mark.parametrize(("text", "reason"), [
    ("10.20.0.1", "no port"),
    (":8080", "no host"),
    ("10.20.0.1:", "port '' is not a number"),
    ("10.20.0.1:http", "port 'http' is not a number"),
    ("10.20.0.1:-1", "is not a number"),
    ("10.20.0.1:٣", "is not a number"),
    ("10.20.0.1:0", "out of range (1..65535)"),
    ("10.20.0.1:65536", "out of range"),
    ("10.20.0.1:0000080", "is not a number"),
    ("::1:80", "needs brackets"),
    ("[nothing]:80", "is not an IPv6 address"),
    ("[10.0.0.1]:80", "is not an IPv6 address"),
    ("999.1.1.1:80", "is not an IP address"),
    ("bad host:80", "is not a host name"),
    ("-dash:80", "is not a host name"),
    ("a" * 300 + ":80", "characters"),
])
def test_bad_endpoints_get_one_line_naming_the_thing_and_the_reason(text, reason):
    with pytest.raises(PosswarmError) as caught:
        parse_endpoint(text, what="store.gossip_seeds", example="10.20.0.1:7946")
    message = str(caught.value)
    assert message.startswith("store.gossip_seeds ") and reason in message and "e.g. 10.20.0.1:7946" in message
    assert "\n" not in message and len(message) < 240


def test_port_zero_only_where_any_free_port_is_meant():
    assert parse_endpoint("0.0.0.0:0", what="--listen", any_port=True) == ("0.0.0.0", 0)
    with pytest.raises(PosswarmError, match=r"out of range \(1\.\.65535\)"):
        parse_endpoint("0.0.0.0:0", what="--listen")


def test_ip_only_refuses_names_and_normalises_addresses():
    assert parse_endpoint("[::0:1]:80", what="seed", ip_only=True) == ("::1", 80)
    with pytest.raises(PosswarmError, match="'central' is not an IP address"):
        parse_endpoint("central:80", what="seed", ip_only=True)


def test_text_that_is_not_a_string_is_refused():
    with pytest.raises(PosswarmError, match="seed int is not HOST:PORT: not text"):
        parse_endpoint(8080, what="seed")


@given(st.ip_addresses(), st.integers(1, 65535))
def test_every_address_and_port_round_trips(ip, port):
    text = f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"
    assert parse_endpoint(text, what="peer", ip_only=True) == (str(ip), port)


@given(st.text(max_size=300))
def test_any_text_parses_or_is_refused_with_a_posswarm_error(text):
    try:
        host, port = parse_endpoint(text, what="peer")
    except PosswarmError:
        return
    assert host and 0 < port <= 65535
