"""Hand-out: who may see whom (the isolation rule), in what order (the policies), never yourself."""

import random

import pytest

from posswarm.errors import PosswarmError
from tracker import announce, handout, isolation
from tracker.announce import Announce
from tracker.isolation import CENTRAL

_ports = iter(range(7000, 9000))


def node(name, role=None, store=None, left=100, ip="10.0.0.1", port=None):
    return Announce(info_hash=b"h" * 20, peer_id=name.encode().ljust(20, b"-")[:20], ip=ip,
                    port=port or next(_ports), uploaded=0, downloaded=0, left=left,
                    store=store, role=role, node=name if role else None)


SEEDER = node("seeder", "seeder", CENTRAL, left=0)
CACHE_A = node("cache-a", "cache", "A")
CACHE_B = node("cache-b", "cache", "B", left=0)
TILL_A1 = node("till-a1", "device", "A", left=0)
TILL_A2 = node("till-a2", "device", "A")
TILL_B1 = node("till-b1", "device", "B")
PLAIN = node("plain", left=0)
EVERYONE = [SEEDER, CACHE_A, CACHE_B, TILL_A1, TILL_A2, TILL_B1, PLAIN]


def names(peers):
    return [p.node_key if p.node else "plain" for p in peers]


def out(requester, policy="store-first", cross_store=False, candidates=EVERYONE, numwant=50):
    """What the desk does: the isolation rule, then the policy, then the cut."""
    allowed = isolation.visible_to(handout.Requester.of(requester), isolation.Stores(candidates),
                                   cross_store=cross_store)
    return handout.hand_out(handout.policy(policy), requester, allowed, numwant=numwant, rng=random.Random(7))


def test_device_sees_only_its_own_store_cache_first_never_itself():
    assert names(out(TILL_A2)) == ["cache-a", "till-a1"]
    assert names(out(TILL_B1)) == ["cache-b"]


def test_cache_gets_seeders_first_then_its_store_and_no_other_store_unless_allowed():
    got = names(out(CACHE_A))
    assert got[0] == "seeder" and sorted(got[1:]) == ["till-a1", "till-a2"]
    got = names(out(CACHE_A, cross_store=True))
    assert got[0] == "seeder" and sorted(got[1:3]) == ["till-a1", "till-a2"] and got[3:] == ["cache-b"]


def test_equal_peers_are_shuffled_so_load_spreads():
    allowed = isolation.visible_to(handout.Requester.of(CACHE_A), isolation.Stores(EVERYONE), cross_store=False)
    orders = {tuple(names(handout.hand_out(handout.policy("store-first"), CACHE_A, allowed, numwant=50,
                                           rng=random.Random(seed)))) for seed in range(20)}
    assert len(orders) == 2


def test_cache_never_gets_other_stores_devices_even_cross_store():
    assert "till-b1" not in names(out(CACHE_A, cross_store=True))


def test_a_client_in_no_store_gets_central_and_other_storeless_clients_never_a_store():
    plain = node("other-plain", ip="10.9.9.9")
    assert names(out(plain)) == ["seeder", "plain"]
    # Placed in store A (private mode does that with A's passkey): A's peers and central, still not B.
    got = names(out(node("plain-a", store="A", ip="10.9.9.8")))
    assert got[0] == "seeder" and sorted(got[1:]) == ["cache-a", "till-a1", "till-a2"]


def test_central_is_handed_seeders_caches_and_plain_clients_never_devices():
    got = names(out(node("seeder-2", "seeder", CENTRAL, left=0)))
    assert got[0] == "seeder" and sorted(got[1:3]) == ["cache-a", "cache-b"] and got[3:] == ["plain"]


def test_same_address_with_another_peer_id_counts_as_self():
    me_again = node("restarted", ip=TILL_A1.ip, port=TILL_A1.port)
    assert "till-a1" not in names(out(me_again))


def test_completeness_orders_by_bytes_left_with_seeders_ahead():
    half = node("half", "device", "A", left=50)
    got = names(out(node("cache-a2", "cache", "A"), policy="completeness",
                    candidates=[TILL_A2, half, TILL_A1, SEEDER, PLAIN]))
    assert got == ["seeder", "till-a1", "half", "till-a2"]


def test_numwant_cuts_the_ranked_list():
    assert names(out(CACHE_A, numwant=1)) == ["seeder"]


def test_unknown_policy_is_a_start_up_error():
    with pytest.raises(PosswarmError, match="'nearest' does not exist.*store-first"):
        handout.policy("nearest")


@pytest.mark.parametrize("policy", ["store-first", "completeness"])
@pytest.mark.parametrize("v6", [False, True])
def test_ranked_once_cut_per_requester_matches_hand_out_and_packs_the_same_peers(policy, v6):
    # The tracker ranks a swarm once and cuts it per announce; the cut must be what hand_out gives,
    # never the requester (by address, by node id, or tills sharing its NAT address), and its
    # compact bytes must be those peers' entries in order.
    swarm = [node(f"p{i}", ip="10.0.0.7" if i % 5 == 0 else f"10.0.1.{i}", left=i % 3) for i in range(40)]
    swarm += [node(f"till{i}", "device", "A", ip="192.0.2.9", port=6881) for i in range(4)]
    if v6:
        swarm.append(node("six", ip="2001:db8::6", left=0))
    for requester in [swarm[0], swarm[3], swarm[-2 if v6 else -1], node("stranger", ip="10.9.9.9")]:
        ranked = handout.Ranked(handout.policy(policy), handout.Requester.of(requester), swarm, rng=random.Random(3))
        for numwant in (0, 1, 5, 50):
            handed = ranked.cut(requester, numwant)
            got = handed.announces()
            assert len(got) == len(handed) == min(numwant, len(handout.hand_out(handout.policy(policy), requester, swarm, numwant=999)))
            others = [p for p in ranked.peers if (p.ip, p.port) != (requester.ip, requester.port)
                      and (p.node is None or p.node != requester.node)]
            assert got == others[:numwant]
            v4, v6_bytes = handed.compact()
            assert v4 + v6_bytes == b"".join(announce.compact_peer(p.ip, p.port) for p in got if ":" not in p.ip) + \
                b"".join(announce.compact_peer(p.ip, p.port) for p in got if ":" in p.ip)
