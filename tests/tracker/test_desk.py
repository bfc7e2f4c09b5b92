"""The Desk's per-swarm hand-out cache: reused while nothing changes, dropped when a peer joins, stops or completes."""

import random

from tracker.access import Access
from tracker.announce import Announce
from tracker.config import TrackerConfig
from tracker.desk import REFRESH, Desk
from tracker.peerstore import MemoryPeerStore

H = b"\x05" * 20


def peer(n, *, left=10, event="", store=None, role=None):
    return Announce(info_hash=H, peer_id=b"-XX0001-" + b"%012d" % n, ip=f"10.0.0.{n}", port=6881, uploaded=0,
                    downloaded=0, left=left, event=event, store=store, role=role, node=f"n{n}" if role else None)


def desk(policy="completeness"):
    config = TrackerConfig(open=True, policy=policy, interval=30)
    store = MemoryPeerStore(peer_ttl=config.effective_peer_ttl, retain=config.retain)
    return Desk(config, store, Access(open=True), rng=random.Random(1)), config


def handed(answer):
    return sorted(ip for ip, _port, _id in answer.peers)


def test_a_joining_peer_is_handed_out_at_once_and_a_stopped_one_is_gone_at_once():
    d, _ = desk()
    d.announce(peer(1), None, 100.0)
    d.announce(peer(2), None, 100.0)
    assert handed(d.announce(peer(1), None, 100.1)) == ["10.0.0.2"]  # the cache built at 2's join holds 2
    d.announce(peer(3), None, 100.2)  # joins within the refresh second: still handed out
    assert handed(d.announce(peer(1), None, 100.3)) == ["10.0.0.2", "10.0.0.3"]
    assert d.announce(peer(2, event="stopped"), None, 100.4).peers == []  # a stopping peer gets nobody
    answer = d.announce(peer(1), None, 100.5)
    assert handed(answer) == ["10.0.0.3"] and (answer.complete, answer.incomplete) == (0, 2)


def test_completion_counts_at_once_and_quiet_peers_drop_out_after_the_ttl():
    d, config = desk()
    d.announce(peer(1), None, 0.0)
    d.announce(peer(2), None, 0.0)
    answer = d.announce(peer(2, left=0, event="completed"), None, 0.5)
    assert (answer.complete, answer.incomplete) == (1, 1)
    # Peer 1 goes quiet; 2 keeps announcing with nothing changed, so only the clock can refresh the swarm.
    later = config.effective_peer_ttl + REFRESH + 1
    answer = d.announce(peer(2, left=0), None, later)
    assert answer.peers == [] and (answer.complete, answer.incomplete) == (1, 0)


def test_one_ranking_per_store_serves_each_store_its_own_peers():
    d, _ = desk("store-first")
    for n, store in [(1, "A"), (2, "A"), (3, "B"), (4, "B")]:
        d.announce(peer(n, store=store, role="device"), None, 10.0)
    assert handed(d.announce(peer(1, store="A", role="device"), None, 10.1)) == ["10.0.0.2"]
    assert handed(d.announce(peer(3, store="B", role="device"), None, 10.1)) == ["10.0.0.4"]
    assert handed(d.announce(peer(4, store="B", role="device"), None, 10.2)) == ["10.0.0.3"]
