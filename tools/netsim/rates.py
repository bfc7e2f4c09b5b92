"""Rates on a WAN link from timed interface-counter samples (pure: no namespaces, no clock)."""

from __future__ import annotations

from dataclasses import dataclass

from tools.netsim.topology import FRAME_OVERHEAD


@dataclass(frozen=True)
class Sample:
    """A store router's WAN counters (into the store) at ``t`` seconds."""

    t: float
    rx_bytes: int
    rx_packets: int

    @property
    def payload(self) -> int:
        return max(0, self.rx_bytes - FRAME_OVERHEAD * self.rx_packets)


@dataclass(frozen=True)
class SteadyRate:
    """What a link carried while a download ran at full speed: between two fractions of its bytes."""

    seconds: float
    wire_kbps: float  # every bit on the link: frames with their Ethernet/IP/TCP headers
    payload_kbps: float  # what the frames carried


def steady_rate(samples: list[Sample], total_bytes: int, *, low: float = 0.1, high: float = 0.9) -> SteadyRate | None:
    """The rate between the first samples at ``low`` and ``high`` of ``total_bytes`` payload (counted from
    the first sample), leaving out the start (connections, slow start) and the end (the last pieces).

    None when the samples do not span that range with time between them (too few, or too coarse).
    """
    if len(samples) < 2 or total_bytes <= 0 or not 0 <= low < high <= 1:
        return None
    base = samples[0]
    start = next((s for s in samples if s.payload - base.payload >= low * total_bytes), None)
    end = next((s for s in samples if s.payload - base.payload >= high * total_bytes), None)
    if start is None or end is None or end.t <= start.t:
        return None
    seconds = end.t - start.t
    return SteadyRate(
        seconds=seconds,
        wire_kbps=(end.rx_bytes - start.rx_bytes) * 8 / 1000 / seconds,
        payload_kbps=(end.payload - start.payload) * 8 / 1000 / seconds,
    )
