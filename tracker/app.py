"""The tracker's read-only pages (starlette): /stats, /metrics and the dashboard at /; announces go to http_server."""

from __future__ import annotations

from collections.abc import Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from tracker import dashboard, stats
from tracker.desk import Desk
from tracker.metrics import CONTENT_TYPE, TrackerMetrics


def stats_source(desk: Desk, clock: Callable[[], float]) -> Callable[..., dict]:
    """``source(release=None, store=None)`` -> the /stats document as of ``clock()``."""

    def source(release: str | None = None, store: str | None = None) -> dict:
        return stats.summarize(
            desk.store.records(),
            clock(),
            peer_ttl=desk.config.effective_peer_ttl,
            stall_after=3 * desk.config.interval,
            release=release,
            store=store,
        )

    return source


def make_app(desk: Desk, clock: Callable[[], float], metrics: TrackerMetrics) -> Starlette:
    """An ASGI app showing ``desk``'s swarms; ``clock`` gives ``now`` in seconds (wall time, shared by trackers)."""
    summary = stats_source(desk, clock)

    async def stats_route(request: Request) -> Response:
        q = request.query_params
        return JSONResponse(summary(release=q.get("release") or None, store=q.get("store") or None))

    async def metrics_route(request: Request) -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE)

    async def dashboard_route(request: Request) -> Response:
        return HTMLResponse(dashboard.render(summary()))

    return Starlette(
        routes=[
            Route("/stats", stats_route, methods=["GET"]),
            Route("/metrics", metrics_route, methods=["GET"]),
            Route("/", dashboard_route, methods=["GET"]),
        ]
    )
