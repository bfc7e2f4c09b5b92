"""A node's ``/metrics`` (Prometheus): its WAN/LAN bytes, peers and release states, read from its status document."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from posswarm.lifecycle.states import ReleaseState
from posswarm.operator_gate import OperatorGate, read_token

CONTENT_TYPE = CONTENT_TYPE_LATEST
# Every life-cycle state a release can be in, each its own series (0 or 1): alerts can count any of them.
RELEASE_STATES = tuple(state.value for state in ReleaseState)


def gate(token_file: str) -> OperatorGate:
    """Who may read a cache's /metrics: the holder of the token in ``metrics.token_file``; nobody when it is ''."""
    token = read_token(token_file, source="config 'metrics.token_file'") if token_file else None
    return OperatorGate(token, secret="metrics token", off="shut on this cache (set metrics.token_file to the "
                        "caches' metrics token's file)",
                        challenge='Basic realm="posswarm cache", charset="UTF-8"',
                        fix="Authorization: Bearer <token>, or Basic with the token as password")


def route(status: Callable[[], dict | None], operator: OperatorGate) -> Route:
    """``GET /metrics`` on the cache's HTTP service: the node's status document (None while it starts), as gauges,
    to whoever ``operator`` lets through."""

    async def metrics(request: Request) -> Response:
        if (refused := operator.refusal(request, "cache /metrics")) is not None:
            return refused
        doc = status()
        if doc is None:
            return Response(b"node starting: /metrics answers once its parts run (a few seconds)\n", 503,
                            media_type="text/plain")
        return Response(exposition(doc), media_type=CONTENT_TYPE)

    return Route("/metrics", metrics, methods=["GET"])


def exposition(doc: dict) -> bytes:
    """The gauges of one status document (``posswarm.status.node_document``) in the exposition format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(doc))
    return generate_latest(registry)


class _Collector:
    def __init__(self, doc: dict) -> None:
        self._doc = doc

    def describe(self):
        return []

    def collect(self):
        doc = self._doc
        info = GaugeMetricFamily("posswarm_node_info", "1, labelled with who this node is",
                                 labels=["node", "store", "role", "device_class"])
        info.add_metric([doc["node"], doc["store"], doc["role"], doc["class"] or "-"], 1)
        peers = GaugeMetricFamily("posswarm_node_store_peers", "Nodes of its store it knows of (mDNS, tracker)")
        peers.add_metric([], len(doc["peers"]))
        wan = GaugeMetricFamily("posswarm_node_wan_bytes", "Payload bytes of a release taken from outside the store "
                                "(central, web seeds)", labels=["release"])
        lan = GaugeMetricFamily("posswarm_node_lan_bytes", "Payload bytes of a release taken from the store LAN",
                                labels=["release"])
        uploaded = GaugeMetricFamily("posswarm_node_uploaded_bytes", "Payload bytes of a release sent to peers",
                                     labels=["release"])
        done = GaugeMetricFamily("posswarm_node_release_done_ratio", "Share of a release's wanted bytes on disk",
                                 labels=["release"])
        swarm = GaugeMetricFamily("posswarm_node_release_peers", "BitTorrent peers connected for a release",
                                  labels=["release"])
        state = GaugeMetricFamily("posswarm_node_release_state", "1 for the state a release is in on this node",
                                  labels=["release", "state"])
        for r in doc["releases"]:
            key = f"{r['name']}@{r['version']}"
            wan.add_metric([key], r["bytes_from_wan"])
            lan.add_metric([key], r["bytes_from_lan"])
            uploaded.add_metric([key], r["bytes_uploaded"])
            done.add_metric([key], r["done_bytes"] / r["wanted_bytes"] if r["wanted_bytes"] else 1.0)
            swarm.add_metric([key], r["peers"])
            for name in sorted({*RELEASE_STATES, r["state"]}):
                state.add_metric([key, name], 1 if r["state"] == name else 0)
        central = doc["central_state"]
        fresh = GaugeMetricFamily("posswarm_node_central_state_fresh",
                                  "1 while central's signed state is fresh; 0: the store installs nothing new")
        fresh.add_metric([], 1 if central["fresh"] else 0)
        expires = GaugeMetricFamily("posswarm_node_central_state_expires_timestamp_seconds",
                                    "When central's signed state (its timestamp role) expires, Unix time")
        if central["expires"] is not None:
            expires.add_metric([], central["expires"])
        tracker = GaugeMetricFamily("posswarm_node_tracker_last_ok_timestamp_seconds",
                                    "When the tracker last answered this node's announce, Unix time")
        if doc["tracker"]["last_ok"] is not None:
            tracker.add_metric([], doc["tracker"]["last_ok"])
        catalog = GaugeMetricFamily("posswarm_node_catalog_last_ok_timestamp_seconds",
                                    "When the node last read its catalog (central or its cache), Unix time")
        if doc["catalog"]["last_ok"] is not None:
            catalog.add_metric([], doc["catalog"]["last_ok"])
        yield from (info, peers, wan, lan, uploaded, done, swarm, state, fresh, expires, tracker, catalog)
