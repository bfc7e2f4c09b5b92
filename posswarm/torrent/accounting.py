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
    reconnected between polls: the old connection's last value is banked too. What a connection
    carried after the last poll that saw it (a seeder killed mid-transfer: up to a poll's worth at
    line rate) shows only in the torrent's own payload totals; given those, the shortfall is banked
    to the sources of the connections that closed since.
    """

    def __init__(self, lan_network: str | None = None):
        self._lan = lan_network_of(lan_network) if lan_network else None
        self._banked = {"lan": 0, "wan": 0, "web": 0, "upload_lan": 0, "upload_wan": 0}
        self._live: dict[tuple, tuple[Source, int, int]] = {}

    def observe(self, samples: Iterable[PeerSample], payload: tuple[int, int] | None = None) -> None:
        """Take one poll: every connection the torrent has right now, and ``payload``, the torrent's own
        (downloaded, uploaded) payload bytes, read before the connections, if known."""
        now: dict[tuple, tuple[Source, int, int]] = {}
        for s in samples:
            now[s.connection] = (classify(s.remote[0], s.is_web_seed, self._lan), s.downloaded, s.uploaded)
        closed: list[tuple[Source, int, int]] = []
        for conn, (source, down, up) in self._live.items():
            seen = now.get(conn)
            if seen is None or seen[1] < down or seen[2] < up:
                self._bank(source, down, up)
                closed.append((source, down, up))
        self._live = now
        if payload is not None and closed:
            self._bank_unseen(payload, closed)

    def _bank_unseen(self, payload: tuple[int, int], closed: list[tuple[Source, int, int]]) -> None:
        """Bank what the torrent received and sent beyond every counter seen to the sources of the connections
        that closed, in proportion to what each had carried (exact when one closed, an estimate when several)."""
        totals = self.totals()
        for unseen, column in ((payload[0] - totals.downloaded, 1), (payload[1] - totals.uploaded, 2)):
            if unseen <= 0:
                continue  # the connections, read after the totals, may be ahead of them
            for (source, *_), share in zip(closed, split(unseen, [c[column] for c in closed])):
                self._bank(source, share if column == 1 else 0, share if column == 2 else 0)

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


def split(amount: int, weights: list[int]) -> list[int]:
    """``amount`` in whole parts proportional to ``weights`` (equal parts when all are 0), summing to it exactly."""
    if not any(weights):
        weights = [1] * len(weights)
    shares = [amount * w // sum(weights) for w in weights]
    shares[-1] += amount - sum(shares)
    return shares
