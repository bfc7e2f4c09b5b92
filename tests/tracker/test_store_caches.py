"""The tracker tells a till where its own store's caches serve their catalog, and nobody anything about another store's."""

import random

import pytest

from posswarm.announce import NodeIdentity, caches_url, parse_caches
from posswarm.errors import PosswarmError
from tracker import http_server
from tracker.access import Access
from tracker.announce import Announce, BadRequest, Denied, encode_caches, first_values, posswarm_keys
from tracker.config import TrackerConfig
from tracker.desk import Desk
from tracker.metrics import TrackerMetrics
from tracker.peerstore import MemoryPeerStore
from tracker.store_caches import PER_STORE

H = b"\x07" * 20
PASSKEYS = {"A": "A-passkey-a1B2c3D4e5F6g7H8", "B": "B-passkey-a1B2c3D4e5F6g7H8"}
CENTRAL_KEY = "central-passkey-Z9y8X7w6V5u4"


def desk() -> Desk:
    config = TrackerConfig(open=False, catalog="http://seeder/catalog", passkeys=PASSKEYS,
                           central_passkeys=[CENTRAL_KEY], interval=30)
    access = Access(open=False, passkeys=PASSKEYS, central=[CENTRAL_KEY])
    access.publish([H])
    return Desk(config, MemoryPeerStore(peer_ttl=90, retain=1000), access, rng=random.Random(0))


def cache(n: int, store: str, port: int | None = 8000, event: str = "") -> Announce:
    return Announce(info_hash=H, peer_id=b"-PS0100-%012d" % n, ip="203.0.113.9", port=6881, uploaded=0,
                    downloaded=0, left=0, node=f"cache-{store}-{n}", role="cache", store=store,
                    lan_ip=f"10.{n}.0.2", catalog_port=port, event=event)


def test_a_till_is_told_only_its_own_stores_caches_by_their_lan_address():
    d = desk()
    d.announce(cache(1, "A"), PASSKEYS["A"], 100.0)
    d.announce(cache(2, "B"), PASSKEYS["B"], 100.0)
    d.announce(cache(3, "A", port=None), PASSKEYS["A"], 100.0)  # no catalog port: nothing to hand out
    assert d.store_caches(PASSKEYS["A"], "B", "10.1.0.50", 101.0) == [("10.1.0.2", 8000)]  # store= ignored
    assert d.store_caches(PASSKEYS["B"], None, "10.2.0.50", 101.0) == [("10.2.0.2", 8000)]
    assert d.store_caches(PASSKEYS["A"], None, "10.1.0.50", 100.0 + 91) == []  # quiet past its ttl
    with pytest.raises(Denied):
        d.store_caches("wrong-passkey-a1B2c3D4e5F6g7H8", None, "10.9.0.1", 101.0)
    with pytest.raises(BadRequest, match="for a store"):
        d.store_caches(CENTRAL_KEY, None, "10.9.0.1", 101.0)
    d.announce(cache(1, "A", event="stopped"), PASSKEYS["A"], 102.0)
    assert d.store_caches(PASSKEYS["A"], None, "10.1.0.50", 103.0) == []


def test_a_store_cannot_fill_the_list_and_only_a_cache_may_name_a_catalog():
    d = desk()
    for n in range(PER_STORE + 5):
        d.announce(cache(n, "A"), PASSKEYS["A"], 100.0 + n)
    handed = d.store_caches(PASSKEYS["A"], None, "10.1.0.50", 100.0 + PER_STORE + 5)
    assert len(handed) == PER_STORE and handed[0] == (f"10.{PER_STORE + 4}.0.2", 8000)  # the newest first
    with pytest.raises(BadRequest, match="only role=cache"):
        posswarm_keys(first_values(b"role=device&store=A&catalog=8000"))
    with pytest.raises(BadRequest, match="not a port"):
        posswarm_keys(first_values(b"role=cache&store=A&catalog=70000"))


def test_the_node_reads_the_answer_and_keeps_the_passkey_out_of_sight():
    who = NodeIdentity("till-01", "A", "device", "pos", "10.1.0.11", 6881)
    url = caches_url(f"http://tracker:6969/announce/{PASSKEYS['A']}", who)
    assert url == f"http://tracker:6969/caches/{PASSKEYS['A']}?store=A&node=till-01"
    assert caches_url("http://tracker:6969/announce", who) == "http://tracker:6969/caches?store=A&node=till-01"
    d, metrics = desk(), TrackerMetrics()
    d.announce(cache(1, "A"), PASSKEYS["A"], 100.0)
    body = http_server.caches_body(d, metrics, f"/caches/{PASSKEYS['A']}", b"store=A", "10.1.0.50", 101.0)
    assert parse_caches(body, tracker_url="t") == (("10.1.0.2", 8000),)
    assert body == encode_caches([("10.1.0.2", 8000)], 30)
    refused = http_server.caches_body(d, metrics, "/caches/nope-a1B2c3D4e5F6g7H8abc", b"", "10.9.9.9", 101.0)
    with pytest.raises(PosswarmError, match="refused the caches request"):
        parse_caches(refused, tracker_url="t")
