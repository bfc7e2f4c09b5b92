"""Bank per-connection byte counters into a torrent's LAN / WAN / web-seed totals."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Iterable, Literal

from posswarm.torrent.settings import lan_network_of

Source = Literal["lan", "wan", "web"]


@dataclass(frozen=True)
class PeerSample:
    """One connection's counters at one poll, copied out of libtorrent's peer_info."""

    remote: tuple[str, int]
    local: tuple[str, int]  # with remote, tells a reconnection from the same connection
    is_web_seed: bool
    downloaded: int  # payload bytes received on this connection so far
    uploaded: int  # payload bytes sent on this connection so far

    @property
    def connection(self) -> tuple:
        return (self.remote, self.local, self.is_web_seed)


@dataclass(frozen=True)
class SourceTotals:
    """Payload bytes by where they came from; web seeds crossed the WAN too but are kept apart."""

    lan: int = 0
    wan: int = 0
    web: int = 0
    upload_lan: int = 0
    upload_wan: int = 0

    @property
    def downloaded(self) -> int:
        return self.lan + self.wan + self.web

    @property
    def uploaded(self) -> int:
        return self.upload_lan + self.upload_wan


def classify(ip: str, is_web_seed: bool, lan: ipaddress.IPv4Network | ipaddress.IPv6Network | None) -> Source:
    """web for web seeds (BEP 19), lan for an address inside the store LAN, wan for anything else."""
    if is_web_seed:
        return "web"
    if lan is None:
        return "wan"
    try:
        return "lan" if ipaddress.ip_address(ip) in lan else "wan"
    except ValueError:
        return "wan"


class SourceTally:
    """Running totals for one torrent, fed with full polls of its connections.

    libtorrent's counters are per connection and vanish with it, so the last value seen of a
    connection that is gone is banked. A counter that went down means the same endpoints
    reconnected between polls: the old connection's last value is banked too.
    """

    def __init__(self, lan_network: str | None = None):
        self._lan = lan_network_of(lan_network) if lan_network else None
        self._banked = {"lan": 0, "wan": 0, "web": 0, "upload_lan": 0, "upload_wan": 0}
        self._live: dict[tuple, tuple[Source, int, int]] = {}

    def observe(self, samples: Iterable[PeerSample]) -> None:
        """Take one poll: every connection the torrent has right now."""
        now: dict[tuple, tuple[Source, int, int]] = {}
        for s in samples:
            now[s.connection] = (classify(s.remote[0], s.is_web_seed, self._lan), s.downloaded, s.uploaded)
        for conn, (source, down, up) in self._live.items():
            seen = now.get(conn)
            if seen is None or seen[1] < down or seen[2] < up:
                self._bank(source, down, up)
        self._live = now

    def close(self) -> None:
        """Bank every live connection (the torrent is leaving the session)."""
        for source, down, up in self._live.values():
            self._bank(source, down, up)
        self._live = {}

    def totals(self) -> SourceTotals:
        sums = dict(self._banked)
        for source, down, up in self._live.values():
            sums[source] += down
            sums["upload_lan" if source == "lan" else "upload_wan"] += up
        return SourceTotals(**sums)

    def _bank(self, source: Source, down: int, up: int) -> None:
        self._banked[source] += down
        self._banked["upload_lan" if source == "lan" else "upload_wan"] += up
