"""Prometheus exposition: request counters, and the per-store and per-release gauges of /stats; never a per-device label."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from posswarm import operator_gate

CONTENT_TYPE = CONTENT_TYPE_LATEST
CACHE_STATES = ("absent", "downloading", "seeding", "installed")
DEVICE_STATES = ("total", "installed", "staged", "downloading", "stalled")


class TrackerMetrics:
    """One registry per tracker app (not the process-global one), so two apps in one process never clash."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = Counter(
            "posswarm_tracker_requests", "Announces and scrapes answered", ["transport", "kind", "result"],
            registry=self.registry,
        )
        self.udp_dropped = Counter(
            "posswarm_tracker_udp_dropped", "UDP datagrams not served: garbage (silence) or an unproven connection id",
            ["reason"], registry=self.registry,
        )
        self.refused = Counter(
            "posswarm_tracker_connections_refused", "HTTP connections closed on arrival: its address or the tracker full",
            registry=self.registry,
        )
        self.operator_refused = Counter(
            "posswarm_tracker_operator_refused", "Reads of /stats, /metrics or the dashboard refused, by reason: no "
            "operator token, a wrong one, or its address past its wrong guesses", ["reason"], registry=self.registry,
        )
        self.tls_handshakes = Counter(
            "posswarm_tracker_tls_handshakes", "TLS handshakes on the HTTPS port, by result: a node keeping its "
            "connection across announce rounds makes one", ["result"], registry=self.registry,
        )
        self._children: dict[tuple[str, str, bool], object] = {}
        # Every series exists from the start (at 0): a rate() or an alert over it needs no first event.
        for transport in ("http", "udp"):
            for kind in ("announce", "scrape"):
                for ok in (True, False):
                    self.count(transport, kind, ok, by=0)
        for reason in ("garbage", "unproven"):
            self.udp_dropped.labels(reason)
        for result in ("ok", "failed"):
            self.tls_handshakes.labels(result)
        for reason in operator_gate.REASONS:
            self.operator_refused.labels(reason)

    def count(self, transport: str, kind: str, ok: bool, *, by: int = 1) -> None:
        # labels() costs a lock and a lookup; on the announce path the child is looked up once.
        child = self._children.get((transport, kind, ok))
        if child is None:
            child = self._children[(transport, kind, ok)] = self.requests.labels(transport, kind, "ok" if ok else "refused")
        child.inc(by)

    def refused_operator(self, reason: str) -> None:
        self.operator_refused.labels(reason).inc()

    def refused_connection(self) -> None:
        self.refused.inc()

    def handshake(self, ok: bool) -> None:
        self.tls_handshakes.labels("ok" if ok else "failed").inc()

    def dropped(self, reason: str) -> None:
        self.udp_dropped.labels(reason).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def stats_exposition(doc: dict) -> bytes:
    """The per-store and per-release gauges of a /stats document, in the exposition format (after the counters)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_StatsCollector(lambda: doc))
    return generate_latest(registry)


class _StatsCollector:
    """Reads a /stats document: the figures are always those /stats shows."""

    def __init__(self, source: Callable[[], dict]) -> None:
        self._source = source

    def describe(self):
        return []

    def collect(self):
        doc = self._source()
        devices = GaugeMetricFamily("posswarm_store_devices", "Devices of a store on a release, by state",
                                    labels=["release", "store", "state"])
        cache = GaugeMetricFamily("posswarm_store_cache_state", "1 for the store cache's state on a release",
                                  labels=["release", "store", "state"])
        wan = GaugeMetricFamily("posswarm_store_wan_bytes", "Payload bytes the store received over the WAN",
                                labels=["release", "store"])
        lan = GaugeMetricFamily("posswarm_store_lan_bytes", "Payload bytes the store's nodes received on the LAN",
                                labels=["release", "store"])
        store_amp = GaugeMetricFamily("posswarm_store_wan_amplification", "Store WAN bytes / release size (1 = once)",
                                      labels=["release", "store"])
        seen = GaugeMetricFamily("posswarm_store_last_seen_seconds", "Seconds since any node of the store announced",
                                 labels=["release", "store"])
        stores = GaugeMetricFamily("posswarm_release_stores", "Stores with a cache or devices on a release",
                                   labels=["release"])
        release_amp = GaugeMetricFamily("posswarm_release_wan_amplification",
                                        "WAN bytes / (size x stores) of a release", labels=["release"])
        by_class = GaugeMetricFamily("posswarm_store_installed_devices", "Devices that installed a release, by class",
                                     labels=["store", "device_class", "release"])
        for name, r in doc["releases"].items():
            stores.add_metric([name], r["stores_total"])
            if r["wan_amplification"] is not None:
                release_amp.add_metric([name], r["wan_amplification"])
            for store, s in r["stores"].items():
                for state in DEVICE_STATES:
                    devices.add_metric([name, store, state], s[f"devices_{state}"])
                for state in CACHE_STATES:
                    cache.add_metric([name, store, state], 1 if s["cache"]["state"] == state else 0)
                wan.add_metric([name, store], s["wan_bytes"])
                lan.add_metric([name, store], s["lan_bytes"])
                seen.add_metric([name, store], s["last_seen_s"])
                if s["wan_amplification"] is not None:
                    store_amp.add_metric([name, store], s["wan_amplification"])
        for store, row in doc["stores"].items():
            for device_class, releases in row["installed_by_class"].items():
                for name, count in releases.items():
                    by_class.add_metric([store, device_class, name], count)
        yield from (devices, cache, wan, lan, seen, store_amp, stores, release_amp, by_class)
