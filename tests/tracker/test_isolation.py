"""Store isolation is the tracker's rule, not a policy's: whatever the policy, nobody is handed another store's peers."""

import dataclasses
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from tracker import handout, isolation
from tracker.access import Access
from tracker.announce import Announce
from tracker.config import TrackerConfig
from tracker.desk import Desk
from tracker.isolation import CENTRAL
from tracker.peerstore import MemoryPeerStore

H = b"\x07" * 20
STORES = ("A", "B", "C")
PASSKEYS = {store: f"{store}-passkey-a1B2c3D4e5F6g7H8" for store in STORES}
CENTRAL_KEY = "central-passkey-Z9y8X7w6V5u4"

# One peer: (store or central, role, left); its passkey is its store's, central's for central.
peers = st.lists(
    st.tuples(st.sampled_from((*STORES, CENTRAL)), st.sampled_from(("cache", "device", None)), st.sampled_from((0, 7))),
    min_size=1, max_size=30,
)


def desk(policy: str, cross_store: bool) -> Desk:
    config = TrackerConfig(open=False, catalog="http://seeder/catalog", policy=policy, cross_store=cross_store,
                           passkeys=PASSKEYS, central_passkeys=[CENTRAL_KEY])
    access = Access(open=False, passkeys=PASSKEYS, central=[CENTRAL_KEY])
    access.publish([H])
    return Desk(config, MemoryPeerStore(peer_ttl=90, retain=1000), access, rng=random.Random(0))


def announce(n: int, store: str, role: str | None, left: int) -> tuple[Announce, str]:
    a = Announce(info_hash=H, peer_id=b"-PS0100-%012d" % n, ip=f"10.{n}.0.1", port=6881, uploaded=0,
                 downloaded=0, left=left, node=f"n{n}", role="seeder" if store == CENTRAL else role,
                 store=None if store == CENTRAL else store)
    return a, CENTRAL_KEY if store == CENTRAL else PASSKEYS[store]


def allowed(me: tuple[str, str | None], peer: tuple[str, str | None], cross_store: bool) -> bool:
    """The rule written out once more, by cases, from the requester's side."""
    (my_store, my_role), (store, role) = me, peer
    if my_store == CENTRAL:
        return role != "device"
    if store == my_store:
        return True
    if store == CENTRAL:
        return my_role != "device"
    return cross_store and my_role == "cache" and role == "cache"


def check_no_leak(policy: str, swarm: list, cross_store: bool) -> None:
    d = desk(policy, cross_store)
    for n, (store, role, left) in enumerate(swarm):
        d.announce(*announce(n, store, role, left), now=10.0)
    who = {f"10.{n}.0.1": (store, "seeder" if store == CENTRAL else role) for n, (store, role, _) in enumerate(swarm)}
    for n, (store, role, left) in enumerate(swarm):
        me = who[f"10.{n}.0.1"]
        answer = d.announce(*announce(n, store, role, left), now=10.5)
        handed = [ip for ip, _port, _id in answer.peers]
        assert f"10.{n}.0.1" not in handed
        for ip in handed:
            assert allowed(me, who[ip], cross_store), f"{me} was handed {who[ip]} by {policy}"
        if me[1] == "device":  # a device: its own store's peers and nothing else
            assert all(who[ip][0] == store for ip in handed)
        # Nothing it may see is withheld either (numwant 50 is above the swarm's size).
        expected = sum(1 for m, other in who.items() if m != f"10.{n}.0.1" and allowed(me, other, cross_store))
        assert len(handed) == expected


@settings(max_examples=150, deadline=None)
@given(peers, st.booleans())
def test_store_first_cannot_leak_another_store(swarm, cross_store):
    check_no_leak("store-first", swarm, cross_store)


@settings(max_examples=150, deadline=None)
@given(peers, st.booleans())
def test_completeness_cannot_leak_another_store(swarm, cross_store):
    # completeness ranks by bytes left and reads no store at all: before isolation was the desk's,
    # it handed a device every store's peers and central's seeder.
    check_no_leak("completeness", swarm, cross_store)


def test_every_policy_is_covered_here():
    assert set(handout.POLICIES) == {"store-first", "completeness"}


def test_a_policy_that_returns_everything_it_is_given_still_cannot_leak():
    # Whatever a future policy does with its candidates, it only ever gets what isolation allowed.
    me = handout.Requester("device", "A")
    placed = [dataclasses.replace(announce(n, store, role, 0)[0], store=store)
              for n, (store, role) in enumerate([("A", "cache"), ("B", "cache"), (CENTRAL, None), ("A", "device"),
                                                 ("B", None)])]
    everything = handout.Ranked(lambda requester, candidates: list(candidates), me,
                                isolation.visible_to(me, isolation.Stores(placed), cross_store=True))
    assert sorted(a.node for a in everything.peers) == ["n0", "n3"]


@settings(max_examples=300, deadline=None)
@given(peers, st.sampled_from((*STORES, CENTRAL, None)), st.sampled_from(("cache", "device", "seeder", None)),
       st.booleans())
def test_the_by_store_lookup_is_exactly_the_rule(swarm, store, role, cross_store):
    placed = [dataclasses.replace(announce(n, s, r, left)[0], store=s) for n, (s, r, left) in enumerate(swarm)]
    me = handout.Requester(role, store)
    found = isolation.visible_to(me, isolation.Stores(placed), cross_store=cross_store)
    assert sorted(a.node for a in found) == sorted(
        a.node for a in placed if isolation.visible(me, a, cross_store=cross_store))
