"""Faults on the wire of one store on loopback: the iptables and tc commands for loss, resets, throttling and cuts (pure).

Every command runs inside a network namespace made for one run (tools/netsim/isolated.py), never
in the host's: the rules match the store's 127.X.Y.Z addresses on that namespace's ``lo``.
"""

from __future__ import annotations

from dataclasses import dataclass

from posswarm.errors import PosswarmError

# tbf drops any packet larger than its bucket; lo's 64 KiB frames (and GSO) would never pass a small one.
LO_MTU = 1500
THROTTLE_CLASS = "1:3"


@dataclass(frozen=True)
class Wire:
    """What goes wrong between the parts of one store; probabilities are per packet.

    ``loss``: dropped between tills and cache and between cache and central, both ways.
    ``reset``: of the packets on the same links, the share answered by a TCP reset instead.
    ``answer_loss``: dropped on the way from a till's API to the POS (the sale may be committed, the POS
    cannot know). ``central_kbit``: the cache's link to central throttled (tc tbf), both ways.
    ``till_cut_s`` / ``central_cut_s``: one partition each, a till cut off from the cache (not from the
    other tills), and the cache cut off from central (the WAN outage, compressed in time).
    """

    loss: float = 0.0
    reset: float = 0.0
    answer_loss: float = 0.0
    central_kbit: int = 0
    till_cut_s: float = 0.0
    central_cut_s: float = 0.0

    def __post_init__(self) -> None:
        for name in ("loss", "reset", "answer_loss"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise PosswarmError(f"wire {name} {getattr(self, name)!r}: a probability from 0 to below 1")
        if self.central_kbit < 0 or self.till_cut_s < 0 or self.central_cut_s < 0:
            raise PosswarmError("wire: throttle and cut durations cannot be negative")


@dataclass(frozen=True)
class Addresses:
    """Where each part of the store listens on the namespace's loopback (tools/sales_rig.py decides)."""

    central: str
    cache: str
    tills: tuple[str, ...]
    pos: str  # the network the POSes send from, e.g. 127.40.2.0/24


def _both_ways(a: str | None, b: str, *match: str) -> list[list[str]]:
    """Rules for packets from ``a`` to ``b`` and back; ``a`` None = any address (the cache reaches central
    from whatever source address the kernel picks, only its gossip binds the node's own)."""
    def ends(src: str | None, dst: str | None) -> list[str]:
        return [*(["-s", src] if src else []), *(["-d", dst] if dst else [])]
    return [["iptables", "-A", "OUTPUT", *ends(a, b), *match], ["iptables", "-A", "OUTPUT", *ends(b, a), *match]]


def _random(p: float) -> list[str]:
    return ["-m", "statistic", "--mode", "random", "--probability", f"{p:.4f}"]


def setup_commands(wire: Wire, where: Addresses) -> list[list[str]]:
    """The rules for the whole run; the cuts come and go with :func:`cut_commands`."""
    links = [(where.cache, till) for till in where.tills] + [(None, where.central)]
    cmds = [["ip", "link", "set", "lo", "mtu", str(LO_MTU), "up"]]
    for a, b in links:
        if wire.reset:  # first, so a packet that would also have been dropped is reset at this rate
            cmds += _both_ways(a, b, "-p", "tcp", *_random(wire.reset), "-j", "REJECT", "--reject-with", "tcp-reset")
        if wire.loss:
            cmds += _both_ways(a, b, *_random(wire.loss), "-j", "DROP")
    if wire.answer_loss:
        cmds.append(["iptables", "-A", "OUTPUT", "-s", "127.0.0.1", "-d", where.pos, "-p", "tcp",
                     *_random(wire.answer_loss), "-j", "DROP"])
    if wire.central_kbit:
        burst = max(16 * 1024, wire.central_kbit * 1000 // 8 // 10)  # 100 ms of the rate, at least a few frames
        cmds += [
            ["ip", "link", "set", "dev", "lo", "gso_max_segs", "1"],
            ["tc", "qdisc", "add", "dev", "lo", "root", "handle", "1:", "htb", "default", "1", "r2q", "100000"],
            ["tc", "class", "add", "dev", "lo", "parent", "1:", "classid", "1:1", "htb", "rate", "10gbit"],
            ["tc", "class", "add", "dev", "lo", "parent", "1:", "classid", THROTTLE_CLASS, "htb", "rate", "10gbit"],
            ["tc", "qdisc", "add", "dev", "lo", "parent", THROTTLE_CLASS, "handle", "30:", "tbf",
             "rate", f"{wire.central_kbit}kbit", "burst", str(burst), "latency", "200ms"],
        ]
        for end in ("src", "dst"):  # only the cache talks to central
            cmds.append(["tc", "filter", "add", "dev", "lo", "parent", "1:", "protocol", "ip", "u32",
                         "match", "ip", end, f"{where.central}/32", "flowid", THROTTLE_CLASS])
    return cmds


def cut_commands(a: str | None, b: str, *, heal: bool = False) -> list[list[str]]:
    """Cut ``a`` (None: everyone) off from ``b``, every packet either way dropped ahead of the other rules; or heal it."""
    return [["iptables", "-D" if heal else "-I", "OUTPUT", *cmd[3:]] for cmd in _both_ways(a, b, "-j", "DROP")]
