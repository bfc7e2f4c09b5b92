"""The plan of an emulated network of stores: namespaces, addresses, links, shaping and routes (pure, no I/O)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from posswarm.errors import PosswarmError

PREFIX = "psn-"
MAX_STORES = 250
MAX_DEVICES = 240
# 10.213/16: "the internet", a bridge in its own namespace holding central (10.213.0.1 on its own link),
# the internet's router (10.213.0.254: stores reach each other through it) and router K (10.213.K.2);
# 10.214.K.0/24: store K's LAN. Rarely used private ranges, only ever inside namespaces this tool creates.
# Central has one link of its own into the internet, so its counters hold exactly what central sent and
# received: store-to-store traffic (caches seeding each other) never crosses it.
CENTRAL_IP = "10.213.0.1"
INTERNET_ROUTER_IP = "10.213.0.254"
WAN_NETWORK = "10.213.0.0/16"
# Ethernet 14 + IPv4 20 + TCP 20 + timestamp option 12: what each WAN frame carries besides payload.
# With GSO off on the WAN veths every frame is one wire packet, so payload = bytes - 66 x packets
# (measured on this machine: 16,777,204 estimated for 16,777,216 sent over a tbf-shaped veth).
FRAME_OVERHEAD = 66


@dataclass(frozen=True)
class Node:
    """A posswarm node (the store's cache or one device) in its own namespace."""

    node_id: str
    role: str  # cache | device
    namespace: str
    address: str
    router_port: str  # its veth's name on the router side (a port of the store bridge)


@dataclass(frozen=True)
class Store:
    index: int  # 1-based
    store_id: str
    router: str  # namespace holding the WAN uplink, the bridge and the routes
    lan_network: str
    gateway: str  # the router's address on the store LAN
    wan_router_ip: str  # the router's address on the WAN
    internet_port: str  # the internet's end of this store's WAN link (a port of its bridge)
    cache: Node
    devices: tuple[Node, ...]

    @property
    def nodes(self) -> tuple[Node, ...]:
        return (self.cache, *self.devices)


@dataclass(frozen=True)
class Topology:
    prefix: str
    wan_mbit: float
    lan_mbit: float
    stores: tuple[Store, ...]

    @property
    def central(self) -> str:
        return f"{self.prefix}central"

    @property
    def internet(self) -> str:
        return f"{self.prefix}inet"

    @property
    def central_ip(self) -> str:
        return CENTRAL_IP

    def namespaces(self) -> list[str]:
        """Every namespace, in creation order (the internet, central, then per store its router and nodes)."""
        names = [self.internet, self.central]
        for store in self.stores:
            names += [store.router, *(n.namespace for n in store.nodes)]
        return names


def plan(stores: int, devices: int, *, wan_mbit: float, lan_mbit: float, prefix: str = PREFIX) -> Topology:
    """K stores, each a router + cache + N devices; addresses, names and rates all decided here."""
    if not 1 <= stores <= MAX_STORES:
        raise PosswarmError(f"--stores {stores}: choose 1..{MAX_STORES} stores")
    if not 1 <= devices <= MAX_DEVICES:
        raise PosswarmError(f"--devices {devices}: choose 1..{MAX_DEVICES} devices per store")
    for flag, rate in (("--wan-mbit", wan_mbit), ("--lan-mbit", lan_mbit)):
        if not 0.1 <= rate <= 100_000:
            raise PosswarmError(f"{flag} {rate}: choose a rate from 0.1 to 100000 Mbit/s")
    if not prefix or not prefix.replace("-", "").isalnum() or len(prefix) > 32:
        raise PosswarmError(f"namespace prefix {prefix!r}: use letters, digits and '-' (max 32), e.g. 'psn-'")
    planned = []
    for k in range(1, stores + 1):
        lan = ipaddress.IPv4Network(f"10.214.{k}.0/24")
        cache = Node(f"s{k}-cache", "cache", f"{prefix}s{k}-cache", str(lan[2]), "n0")
        tills = tuple(
            Node(f"s{k}-till-{i:02d}", "device", f"{prefix}s{k}-d{i}", str(lan[9 + i]), f"n{i}")
            for i in range(1, devices + 1)
        )
        planned.append(Store(
            index=k, store_id=f"S{k:03d}", router=f"{prefix}r{k}", lan_network=str(lan), gateway=str(lan[1]),
            wan_router_ip=f"10.213.{k}.2", internet_port=f"w{k}",
            cache=cache, devices=tills,
        ))
    return Topology(prefix, float(wan_mbit), float(lan_mbit), tuple(planned))


def _shape(ns: str, dev: str, mbit: float) -> list[str]:
    # tbf needs a bucket of at least one timer tick of traffic; 10 ms of line rate (>= 32 KiB)
    # lets 400 Mbit reach line rate, and 50 ms of queue keeps TCP from losing whole windows.
    burst = max(32 * 1024, int(mbit * 1e6 / 8 / 100))
    return ["tc", "-n", ns, "qdisc", "add", "dev", dev, "root", "tbf",
            "rate", f"{mbit:g}mbit", "burst", str(burst), "latency", "50ms"]


def _veth(ns_a: str, if_a: str, ns_b: str, if_b: str) -> list[str]:
    # created straight inside the namespaces, so nothing ever appears in (or leaks into) the host's
    return ["ip", "-n", ns_a, "link", "add", if_a, "type", "veth", "peer", "name", if_b, "netns", ns_b]


def setup_commands(topo: Topology) -> list[list[str]]:
    """The ip/tc/sysctl commands that build ``topo``, in order (namespaces must not exist yet)."""
    cmds = [["ip", "netns", "add", ns] for ns in topo.namespaces()]
    cmds += [["ip", "-n", ns, "link", "set", "lo", "up"] for ns in topo.namespaces()]
    i, c = topo.internet, topo.central
    wan_prefixlen = WAN_NETWORK.split("/")[1]
    cmds += [
        ["ip", "-n", i, "link", "add", "wan", "type", "bridge"],
        ["ip", "-n", i, "addr", "add", f"{INTERNET_ROUTER_IP}/{wan_prefixlen}", "dev", "wan"],
        ["ip", "-n", i, "link", "set", "wan", "up"],
        # the internet routes between stores (caches may fetch from each other, tracker permitting)
        ["ip", "netns", "exec", i, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"],
        _veth(i, "central", c, "up"),
        ["ip", "-n", i, "link", "set", "central", "master", "wan", "up"],
        # central's address sits on its own link, not on lo (libtorrent binds to the address's device)
        ["ip", "-n", c, "addr", "add", f"{CENTRAL_IP}/{wan_prefixlen}", "dev", "up"],
        # one frame per skb, so interface counters give exact payload bytes (FRAME_OVERHEAD)
        ["ip", "-n", c, "link", "set", "dev", "up", "gso_max_segs", "1", "up"],
        ["ip", "-n", i, "link", "set", "dev", "central", "gso_max_segs", "1"],
    ]
    for s in topo.stores:
        r = s.router
        cmds.append(_veth(i, s.internet_port, r, "wan"))
        cmds += [
            ["ip", "-n", i, "link", "set", s.internet_port, "master", "wan"],
            ["ip", "-n", r, "addr", "add", f"{s.wan_router_ip}/{wan_prefixlen}", "dev", "wan"],
        ]
        for ns, dev in ((i, s.internet_port), (r, "wan")):
            cmds.append(["ip", "-n", ns, "link", "set", "dev", dev, "gso_max_segs", "1", "up"])
            cmds.append(_shape(ns, dev, topo.wan_mbit))
        cmds += [
            ["ip", "-n", c, "route", "add", s.lan_network, "via", s.wan_router_ip],
            ["ip", "-n", i, "route", "add", s.lan_network, "via", s.wan_router_ip],
            ["ip", "netns", "exec", r, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"],
            ["ip", "-n", r, "link", "add", "br0", "type", "bridge"],
            ["ip", "-n", r, "addr", "add", f"{s.gateway}/24", "dev", "br0"],
            ["ip", "-n", r, "link", "set", "br0", "up"],
            # central is on-link (10.213/16); other stores' LANs go through the internet's router
            ["ip", "-n", r, "route", "add", "default", "via", INTERNET_ROUTER_IP],
        ]
        prefixlen = ipaddress.IPv4Network(s.lan_network).prefixlen
        for node in s.nodes:
            n = node.namespace
            cmds += [
                _veth(r, node.router_port, n, "eth0"),
                ["ip", "-n", r, "link", "set", node.router_port, "master", "br0", "up"],
                ["ip", "-n", n, "addr", "add", f"{node.address}/{prefixlen}", "dev", "eth0"],
                ["ip", "-n", n, "link", "set", "eth0", "up"],
                # a default route: sockets without IP_MULTICAST_IF get ENETUNREACH otherwise
                ["ip", "-n", n, "route", "add", "default", "via", s.gateway],
                _shape(r, node.router_port, topo.lan_mbit),  # towards the node: its download
                _shape(n, "eth0", topo.lan_mbit),  # from the node: its upload
            ]
    return cmds
