"""The pure netsim planner: names, addresses, shaping and the commands that build them."""

import ipaddress

import pytest

from posswarm.errors import PosswarmError
from tools.netsim.topology import CENTRAL_IP, plan, setup_commands


def test_plan_gives_every_store_its_own_lan_router_and_unique_names():
    topo = plan(3, 4, wan_mbit=40, lan_mbit=400, prefix="psn-t-")
    names = topo.namespaces()
    assert len(names) == len(set(names)) == 2 + 3 * (1 + 1 + 4)  # internet + central, per store router + nodes
    assert all(n.startswith("psn-t-") for n in names)
    lans = [ipaddress.IPv4Network(s.lan_network) for s in topo.stores]
    assert len(set(lans)) == 3 and all(lan.is_private for lan in lans)
    assert all(not a.overlaps(b) for i, a in enumerate(lans) for b in lans[i + 1:])
    for store, lan in zip(topo.stores, lans):
        addresses = [ipaddress.IPv4Address(n.address) for n in store.nodes] + [ipaddress.IPv4Address(store.gateway)]
        assert len(set(addresses)) == 6 and all(a in lan for a in addresses)
        assert ipaddress.IPv4Address(store.wan_router_ip) not in lan
        assert [n.role for n in store.nodes] == ["cache"] + ["device"] * 4
    ids = [n.node_id for s in topo.stores for n in s.nodes]
    assert len(ids) == len(set(ids))
    assert ipaddress.IPv4Address(CENTRAL_IP).is_private


def test_commands_shape_both_ends_of_every_wan_and_lan_link():
    topo = plan(2, 2, wan_mbit=40, lan_mbit=400, prefix="psn-t-")
    cmds = setup_commands(topo)
    tbf = [c for c in cmds if c[0] == "tc"]
    wan = [c for c in tbf if "40mbit" in c]
    lan = [c for c in tbf if "400mbit" in c]
    assert len(wan) == 2 * 2  # the internet's port + the router's uplink, per store (central's own link is free)
    assert len(lan) == 2 * 3 * 2  # router port + node side, per node (cache and 2 devices), per store
    assert {(c[2], c[6]) for c in wan} == {("psn-t-inet", "w1"), ("psn-t-r1", "wan"),
                                          ("psn-t-inet", "w2"), ("psn-t-r2", "wan")}
    # central has a link of its own: store-to-store traffic is routed by the internet, never through central
    assert ["ip", "-n", "psn-t-central", "addr", "add", f"{CENTRAL_IP}/16", "dev", "up"] in cmds
    assert not [c for c in cmds if c[:3] == ["ip", "netns", "exec"] and c[3] == "psn-t-central" and "sysctl" in c]
    # every namespace is created before anything is put in it, and every node gets a default route
    first_use = {ns: i for i, c in reversed(list(enumerate(cmds))) for ns in c if ns.startswith("psn-t-")}
    created = {c[3]: i for i, c in enumerate(cmds) if c[:3] == ["ip", "netns", "add"]}
    assert set(created) == set(topo.namespaces()) and all(created[ns] <= first_use[ns] for ns in created)
    routes = {c[2] for c in cmds if c[3:6] == ["route", "add", "default"]}
    assert routes >= {n.namespace for s in topo.stores for n in s.nodes}
    # interface names fit IFNAMSIZ (15) and nothing is created in the host's namespace
    assert all(len(c[c.index("link") + 2]) <= 15 for c in cmds if "link" in c and "add" in c and c[1] == "-n")
    assert all(c[1] == "-n" or c[1] == "netns" for c in cmds if c[0] == "ip")


@pytest.mark.parametrize("kwargs", [
    dict(stores=0, devices=3), dict(stores=1, devices=0), dict(stores=1, devices=241),
    dict(stores=1, devices=3, wan_mbit=0), dict(stores=1, devices=3, prefix="bad prefix"),
])
def test_plan_refuses_impossible_networks_with_a_clear_error(kwargs):
    args = dict(wan_mbit=40, lan_mbit=400) | kwargs
    with pytest.raises(PosswarmError, match="choose|prefix"):
        plan(args.pop("stores"), args.pop("devices"), **args)
