"""Rates on a WAN link from timed interface-counter samples (pure: no namespaces, no clock)."""

from __future__ import annotations

import math
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


@dataclass(frozen=True)
class Timeline:
    """When a store's WAN download began and ended, and its payload rate in even steps from its start."""

    first_byte_s: float  # the sample before the first busy one, from t0
    last_byte_s: float  # the last busy sample, from t0
    fetch_kbps: float  # payload between the two, over the time between them
    step_s: float
    kbps: tuple[float, ...]  # payload rate in each step from the first byte


def timeline(samples: list[Sample], t0: float, *, step_s: float = 0.5, idle_bytes: int = 16 * 1024) -> Timeline | None:
    """The download in ``samples``, timed from ``t0``; None if nothing arrived.

    A sample is busy when more than ``idle_bytes`` arrived since the one before: an idle link's
    announces and catalog polls carry 1-3 KiB at a time (measured), a download at 1.3 Mbit/s or more
    over 0.1 s samples more than 16 KiB.
    """
    busy = [i for i in range(1, len(samples)) if samples[i].payload - samples[i - 1].payload > idle_bytes]
    if not busy or step_s <= 0:
        return None
    start, last = samples[busy[0] - 1], samples[busy[-1]]
    seconds = last.t - start.t

    def at(t: float) -> int:  # payload counted by t: the last sample taken by then
        return max((x.payload for x in samples if x.t <= t), default=start.payload)

    steps = range(math.ceil(seconds / step_s))
    kbps = [round((at(start.t + (i + 1) * step_s) - at(start.t + i * step_s)) * 8 / 1000 / step_s) for i in steps]
    return Timeline(
        first_byte_s=round(start.t - t0, 2),
        last_byte_s=round(last.t - t0, 2),
        fetch_kbps=round((last.payload - start.payload) * 8 / 1000 / seconds),
        step_s=step_s,
        kbps=tuple(kbps),
    )
