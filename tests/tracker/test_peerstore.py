"""Both peer stores (in-memory, and Redis on a real redis-server): live swarm, stop, expiry, retention, by ``now``."""

import dataclasses
import uuid

import pytest

from tracker.announce import Announce
from tracker.peerstore import MemoryPeerStore

H = b"\x01" * 20


def ann(node, **kw):
    base = dict(info_hash=H, peer_id=node.encode().ljust(20, b"-"), ip="10.0.0.1", port=6881,
                uploaded=0, downloaded=0, left=10, node=node)
    base.update(kw)
    return Announce(**base)


@pytest.fixture(params=["memory", "redis"])
def new_store(request):
    if request.param == "memory":
        return MemoryPeerStore
    import redis

    from tracker.redis_store import RedisPeerStore

    client = redis.Redis.from_url(request.getfixturevalue("redis_url"))
    prefix = f"test-{uuid.uuid4().hex}:"  # every test its own keyspace on the shared server
    return lambda **kw: RedisPeerStore(client, prefix=prefix, **kw)


def test_live_swarm_counts_and_ttl(new_store):
    store = new_store(peer_ttl=90, retain=1000)
    store.record(ann("a", port=1), now=0)
    store.record(ann("b", port=2, left=0, event="completed"), now=50)
    assert sorted(a.node for a in store.swarm(H, now=60)) == ["a", "b"]
    assert store.counts(H, now=60) == (1, 1, 1)
    assert [a.node for a in store.swarm(H, now=100)] == ["b"]  # a went quiet for > peer_ttl
    assert store.counts(b"\x02" * 20, now=0) == (0, 0, 0)


def test_stopped_leaves_the_swarm_but_stays_in_records(new_store):
    store = new_store(peer_ttl=90, retain=1000)
    store.record(ann("a", wan=500), now=0)
    store.record(ann("a", wan=700, event="stopped"), now=5)
    assert store.swarm(H, now=5) == []
    (peer,) = store.records()
    assert peer.stopped and peer.announce.wan == 700


def test_reannounce_replaces_and_a_plain_client_restarting_on_its_address_replaces_the_old(new_store):
    store = new_store(peer_ttl=90, retain=1000)
    store.record(ann("a", left=10), now=0)
    store.record(ann("a", left=0), now=1)
    assert [a.left for a in store.swarm(H, now=1)] == [0]
    first = dataclasses.replace(ann("x", port=7000), node=None, peer_id=b"-LT2110-first-id-123")
    restarted = dataclasses.replace(first, peer_id=b"-LT2110-fresh-id-123")
    store.record(first, now=2)
    store.record(restarted, now=3)
    assert sorted(a.node_key for a in store.swarm(H, now=3)) == sorted(["a", restarted.node_key])


def test_expire_forgets_after_retention_only(new_store):
    store = new_store(peer_ttl=90, retain=1000)
    store.record(ann("a", port=1), now=0)
    store.record(ann("b", port=2), now=500)
    assert store.expire(now=900) == 0
    assert store.expire(now=1001) == 1
    assert [p.announce.node for p in store.records()] == ["b"]
    assert store.expire(now=1600) == 1
    assert store.info_hashes() == []


def test_posswarm_nodes_sharing_a_nat_address_are_kept_apart(new_store):
    store = new_store(peer_ttl=90, retain=1000)
    store.record(ann("till-1", ip="203.0.113.5"), now=0)
    store.record(ann("till-2", ip="203.0.113.5"), now=1)
    assert sorted(a.node for a in store.swarm(H, now=1)) == ["till-1", "till-2"]


def test_progress_time_moves_only_when_left_or_installed_changes(new_store):
    store = new_store(peer_ttl=90, retain=1000)
    store.record(ann("a", left=10), now=0)
    store.record(ann("a", left=10), now=50)
    (peer,) = store.records()
    assert (peer.last_seen, peer.progressed_at) == (50, 0)
    store.record(ann("a", left=5), now=60)
    (peer,) = store.records()
    assert peer.progressed_at == 60


def test_memory_records_share_repeated_texts_and_the_info_hash():
    # Memory per peer (issue 4: <= 500 bytes at 100k peers): equal texts and hashes arriving as
    # separate objects, as every parsed announce brings them, are stored once.
    store = MemoryPeerStore(peer_ttl=90, retain=1000)
    for n in (1, 2):
        store.record(ann(f"till-{n}", info_hash=bytes(H), ip="".join(["10.0.", "0.1"]), store="".join(["st", "ore-7"]),
                         role="device", release="".join(["pos@", "1"]), uploaded=10**12), now=n)
    first, second = store.records()
    assert first.info_hash is second.info_hash and first.ip is second.ip
    assert first.store is second.store and first.release is second.release
    assert (first.node, first.store, first.announce.ip) == ("till-1", "store-7", "10.0.0.1")


def test_new_records_stop_at_the_caps_and_quiet_ones_make_room(new_store):
    from tracker.peerstore import EVICT_EVERY, Caps, RecordsFull

    store = new_store(peer_ttl=90, retain=10_000, caps=Caps(max_records=6, max_records_per_store=3))
    for n in range(3):
        store.record(ann(f"a{n}", store="A"), now=0)
    with pytest.raises(RecordsFull, match="store A has 3 records on this tracker"):
        store.record(ann("a3", store="A"), now=1)
    store.record(ann("a1", store="A", left=0), now=2)  # a known node goes on announcing
    for n in range(3):
        store.record(ann(f"b{n}", store="B"), now=3)
    with pytest.raises(RecordsFull, match="max_records = 6"):
        store.record(ann("c0", store="C"), now=4)
    # Once records are no longer handed out (their TTL is over), a newcomer at a cap frees them (a scan at most
    # every EVICT_EVERY s); b0 announced again, so it stays.
    later = 3 + 90 + EVICT_EVERY + 1
    store.record(ann("b0", store="B"), now=later - 1)
    store.record(ann("a3", store="A"), now=later)
    assert sorted(p.node for p in store.records()) == ["a3", "b0"]
    store.record(ann("a4", store="A"), now=later)  # the counts went down with the records
    store.record(ann("a5", store="A"), now=later)
