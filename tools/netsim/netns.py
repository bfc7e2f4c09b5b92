"""Build, read and tear down network namespaces with ip/tc (the only module here that runs them)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass

from posswarm import logs
from posswarm.errors import PosswarmError
from tools.netsim.topology import FRAME_OVERHEAD, Topology, setup_commands

log = logs.get("netsim")


@dataclass(frozen=True)
class Counters:
    """One interface's counters; payload_* subtract each frame's headers (topology.FRAME_OVERHEAD)."""

    rx_bytes: int
    rx_packets: int
    tx_bytes: int
    tx_packets: int

    def __add__(self, other: Counters) -> Counters:
        return Counters(self.rx_bytes + other.rx_bytes, self.rx_packets + other.rx_packets,
                        self.tx_bytes + other.tx_bytes, self.tx_packets + other.tx_packets)

    def __sub__(self, other: Counters) -> Counters:
        return Counters(self.rx_bytes - other.rx_bytes, self.rx_packets - other.rx_packets,
                        self.tx_bytes - other.tx_bytes, self.tx_packets - other.tx_packets)

    @property
    def rx_payload(self) -> int:
        return max(0, self.rx_bytes - FRAME_OVERHEAD * self.rx_packets)

    @property
    def tx_payload(self) -> int:
        return max(0, self.tx_bytes - FRAME_OVERHEAD * self.tx_packets)


def _run(cmd: list[str]) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise PosswarmError(f"{cmd[0]}: not installed (apt-get install iproute2)") from None
    except subprocess.TimeoutExpired:
        raise PosswarmError(f"{' '.join(cmd)}: no answer in 30 s") from None
    if done.returncode != 0:
        raise PosswarmError(f"{' '.join(cmd)}: {done.stderr.strip() or f'exit {done.returncode}'}")
    return done.stdout


def check_can_start(prefix: str) -> None:
    """Refuse to start when not root or when namespaces of an earlier run are still there."""
    if os.geteuid() != 0:
        raise PosswarmError("posswarm-netsim needs root to create network namespaces (run it with sudo)")
    left = leftovers(prefix)
    if left:
        raise PosswarmError(f"{len(left)} namespace(s) named {prefix}* exist already (e.g. {left[0]}); "
                            f"another run is going, or run 'posswarm-netsim clean' to remove them")


def leftovers(prefix: str) -> list[str]:
    """Namespaces whose names start with ``prefix``."""
    out = _run(["ip", "-j", "netns", "list"]).strip()
    names = [entry["name"] for entry in json.loads(out)] if out else []
    return sorted(n for n in names if n.startswith(prefix))


def build(topo: Topology) -> None:
    """Create every namespace, link, address, route and shaper of ``topo``; all or nothing."""
    try:
        for cmd in setup_commands(topo):
            _run(cmd)
    except BaseException:
        destroy(topo.namespaces())
        raise
    log.info("netsim.built", namespaces=len(topo.namespaces()), stores=len(topo.stores))


def destroy(namespaces: list[str]) -> None:
    """Kill whatever still runs in the namespaces, then delete them (their links and bridges go with them)."""
    for ns in namespaces:
        for pid in _pids(ns):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    for ns in namespaces:
        # a dying process may keep the namespace busy for a moment; deleting only unmounts the name
        for _ in range(3):
            try:
                _run(["ip", "netns", "del", ns])
                break
            except PosswarmError as exc:
                if "No such file" in str(exc):
                    break
                time.sleep(0.2)
    log.info("netsim.destroyed", namespaces=len(namespaces))


def clean(prefix: str) -> list[str]:
    """Remove every namespace named ``prefix``* and the processes inside; returns their names."""
    names = leftovers(prefix)
    destroy(names)
    return names


def _pids(ns: str) -> list[int]:
    try:
        out = _run(["ip", "netns", "pids", ns])
    except PosswarmError:
        return []
    return [int(p) for p in out.split() if p.isdigit()]


def counters(ns: str, dev: str) -> Counters:
    """The kernel's counters of interface ``dev`` inside namespace ``ns``."""
    (entry,) = json.loads(_run(["ip", "-n", ns, "-s", "-j", "link", "show", "dev", dev]))
    stats = entry["stats64"]
    return Counters(stats["rx"]["bytes"], stats["rx"]["packets"], stats["tx"]["bytes"], stats["tx"]["packets"])


def exec_prefix(ns: str) -> list[str]:
    """Prefix a command with this to run it inside ``ns`` (ip execs it: the pid is the command's own)."""
    return ["ip", "netns", "exec", ns]


def apply(cmds: list[list[str]]) -> None:
    """Run ``cmds`` (ip/tc/iptables) in this process's own namespace, in order; the first failure stops them."""
    for cmd in cmds:
        _run(cmd)


def identify(pid: int) -> str:
    """The name of the named namespace ``pid`` runs in ("" when it is not one made by ``ip netns add``)."""
    return _run(["ip", "netns", "identify", str(pid)]).strip()
