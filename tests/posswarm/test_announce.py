"""The node's side of a tracker announce: the query it builds and the replies it accepts."""

from __future__ import annotations

from dataclasses import replace
from urllib.parse import parse_qs, unquote_to_bytes, urlsplit

import fastbencode
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from posswarm.announce import NodeIdentity, ReleaseReport, announce_url, parse_reply, shown_url
from posswarm.announcer import Announcer
from posswarm.errors import PosswarmError
from tracker.announce import parse_announce

WHO = NodeIdentity("till-01", "S042", "device", "pos", "10.20.0.11", 6881)
REPORT = ReleaseReport("pos-os", "2026.11", bytes(range(20)), 1000, 400, 0, 600, 50, False)


def test_query_carries_bep3_and_store_keys():
    url = announce_url("http://t:6969/announce", WHO, REPORT, "started")
    query = urlsplit(url).query
    raw_hash = [p.split("=", 1)[1] for p in query.split("&") if p.startswith("info_hash=")][0]
    assert unquote_to_bytes(raw_hash) == bytes(range(20))
    q = {k: v[0] for k, v in parse_qs(query).items() if k != "info_hash"}
    assert q["left"] == "400" and q["event"] == "started" and q["compact"] == "1"
    assert (q["store"], q["role"], q["class"], q["node"], q["release"]) == ("S042", "device", "pos", "till-01", "pos-os@2026.11")
    assert (q["wan"], q["lan"], q["installed"], q["ip"], q["port"]) == ("0", "600", "0", "10.20.0.11", "6881")
    assert len(WHO.peer_id) == 20


def test_the_rollout_ring_is_announced_when_there_is_one():
    assert "ring=" not in announce_url("http://t/announce", WHO, REPORT)
    assert "&ring=wave-1" in announce_url("http://t/announce", WHO, replace(REPORT, ring="wave-1"))


def test_a_tills_release_state_and_boot_slot_reach_the_tracker_as_it_reads_them():
    report = replace(REPORT, state="staged", boot=("b", "rejected", "health check: " + "x" * 400))
    url = announce_url("http://t/announce", WHO, report)
    a = parse_announce(urlsplit(url).query.encode(), "10.20.0.11")
    assert (a.state, a.slot, a.boot) == ("staged", "b", "rejected")
    assert a.boot_reason.startswith("health check: x") and len(a.boot_reason) == 200  # cut to what the tracker takes
    plain = parse_announce(urlsplit(announce_url("http://t/announce", WHO, REPORT)).query.encode(), "10.20.0.11")
    assert (plain.state, plain.slot, plain.boot) == (None, None, None)


def test_query_appends_to_a_tracker_url_with_a_passkey_query():
    assert "?key=abc&info_hash=" in announce_url("http://t/announce?key=abc", WHO, REPORT)


def test_compact_and_dict_peers_are_read():
    body = fastbencode.bencode({b"interval": 7, b"peers": bytes([10, 20, 0, 12, 0x1A, 0xE1])})
    assert parse_reply(body, tracker_url="t").peers == (("10.20.0.12", 6881),)
    body = fastbencode.bencode({b"interval": 7, b"peers": [{b"ip": b"10.20.0.13", b"port": 6882}]})
    reply = parse_reply(body, tracker_url="t")
    assert reply.peers == (("10.20.0.13", 6882),) and reply.interval == 7


def test_failure_reason_is_an_error_naming_the_tracker():
    with pytest.raises(PosswarmError, match="tracker http://t: refused the announce: unknown passkey"):
        parse_reply(fastbencode.bencode({b"failure reason": b"unknown passkey"}), tracker_url="http://t")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_replies_raise_only_posswarm_errors(body):
    try:
        parse_reply(body, tracker_url="t")
    except PosswarmError:
        pass


def test_a_passkey_is_never_shown():
    assert shown_url("http://t:6969/announce/9f8e7d6c5b4a39281706f5e4d3c2b1a0") == "http://t:6969/announce/<passkey>"
    assert shown_url("http://t:6969/announce") == "http://t:6969/announce"


async def test_an_unreachable_tracker_is_reported_without_its_passkey():
    secret = "9f8e7d6c5b4a39281706f5e4d3c2b1a0"
    announcer = Announcer(f"http://127.0.0.1:9/announce/{secret}", WHO, lambda: [REPORT], lambda report, peers: None)
    async with trio.open_nursery() as nursery:
        await nursery.start(announcer.run)
        with trio.fail_after(10):
            while announcer.last_error is None:
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    assert "unreachable" in announcer.last_error and secret not in announcer.last_error


def test_the_node_says_when_its_central_state_expires_and_the_tracker_reads_it():
    url = announce_url("http://t/announce", WHO, replace(REPORT, central_expires=1796170000))
    assert "&central_expires=1796170000" in url
    parsed = parse_announce(url.split("?", 1)[1].encode(), "10.0.0.9")
    assert parsed.central_expires == 1796170000
