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
    """When a store's WAN download began and ended, and its payload rate in even steps from ``t0``."""

    first_byte_s: float  # the first sample past the idle link's noise, from t0
    last_byte_s: float  # the first sample holding all but the last ``idle_bytes``
    fetch_kbps: float  # payload between the two, over the time between them
    step_s: float
    kbps: tuple[float, ...]  # payload rate in each step from t0


def timeline(samples: list[Sample], t0: float, *, step_s: float = 0.5, idle_bytes: int = 16 * 1024) -> Timeline | None:
    """The download in ``samples`` (counted from the first), timed from ``t0``; None if nothing arrived.

    ``idle_bytes`` is what an idle link still carries (announces, catalog polls): growth below it is
    not the download starting, nor left of it at its end.
    """
    if len(samples) < 2 or step_s <= 0:
        return None
    base, total = samples[0].payload, samples[-1].payload - samples[0].payload
    if total <= 2 * idle_bytes:
        return None
    first = next(s for s in samples if s.payload - base > idle_bytes)
    last = next(s for s in samples if s.payload - base >= total - idle_bytes)
    start = samples[max(0, samples.index(first) - 1)]  # the download began after the sample before it
    seconds = last.t - start.t
    def at(t: float) -> int:  # payload counted by t: the last sample taken by then
        return max((x.payload for x in samples if x.t <= t), default=base) - base

    steps = range(math.ceil((last.t - t0) / step_s))
    kbps = [round((at(t0 + (i + 1) * step_s) - at(t0 + i * step_s)) * 8 / 1000 / step_s) for i in steps]
    return Timeline(
        first_byte_s=round(start.t - t0, 2),
        last_byte_s=round(last.t - t0, 2),
        fetch_kbps=round((last.payload - start.payload) * 8 / 1000 / seconds) if seconds > 0 else 0.0,
        step_s=step_s,
        kbps=tuple(kbps),
    )
