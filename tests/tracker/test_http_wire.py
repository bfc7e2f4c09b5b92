"""The tracker's HTTP/1.1 subset: request heads, keep-alive rules, limits, and what it refuses."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tracker import http_wire
from tracker.http_wire import HttpError


def test_get_with_query_and_keep_alive_rules():
    r = http_wire.parse_head(b"GET /announce/k17?info_hash=%00&port=1 HTTP/1.1\r\nHost: t\r\n\r\n")
    assert (r.method, r.path, r.query, r.keep_alive) == ("GET", "/announce/k17", b"info_hash=%00&port=1", True)
    assert r.headers == [(b"host", b"t")]
    assert not http_wire.parse_head(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive
    assert not http_wire.parse_head(b"GET / HTTP/1.0\r\n\r\n").keep_alive
    assert http_wire.parse_head(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive


def test_head_end_finds_pipelined_requests_and_enforces_the_limit():
    two = b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n"
    assert http_wire.head_end(two) == 19 and http_wire.head_end(b"GET /a HTTP/1.1\r\n") == -1
    with pytest.raises(HttpError) as caught:
        http_wire.head_end(b"GET /" + b"a" * http_wire.MAX_HEAD)
    assert caught.value.status == 413


@pytest.mark.parametrize(("head", "status"), [
    (b"POST /announce HTTP/1.1\r\n\r\n", 405),
    (b"GET /announce HTTP/1.1\r\nContent-Length: 5\r\n\r\n", 400),
    (b"GET /announce HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    (b"GET /announce HTTP/2\r\n\r\n", 400),
    (b"GET announce HTTP/1.1\r\n\r\n", 400),
    (b"GET /announce HTTP/1.1\r\nno colon here\r\n\r\n", 400),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),  # a TLS ClientHello on the plain port
])
def test_refused_requests_carry_a_status(head, status):
    with pytest.raises(HttpError) as caught:
        http_wire.parse_head(head)
    assert caught.value.status == status


def test_response_bytes():
    assert http_wire.encode_response(200, b"d8:intervali30ee", "text/plain", keep_alive=True) == (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 16\r\n\r\nd8:intervali30ee")
    closing = http_wire.encode_response(404, b"x", "text/plain", keep_alive=False, head_only=True)
    assert closing.endswith(b"Content-Length: 1\r\nConnection: close\r\n\r\n")


@given(st.binary(max_size=400))
def test_any_head_parses_or_is_refused_with_a_status(raw):
    try:
        http_wire.parse_head(raw + b"\r\n\r\n")
    except HttpError as exc:
        assert exc.status in (400, 405)
