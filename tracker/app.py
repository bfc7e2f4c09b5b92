"""The tracker's read-only pages (starlette): /stats, /metrics and the dashboard at /; announces go to http_server."""

from __future__ import annotations

from collections.abc import Callable

import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from tracker import dashboard, stats
from tracker.desk import Desk
from tracker.metrics import CONTENT_TYPE, TrackerMetrics

MAX_VIEWS = 64  # filtered /stats documents (?release=, ?store=) kept per snapshot


class StatsSnapshot:
    """The /stats document as of its last rebuild, at most ``every`` seconds old, built off the announce loop.

    Summarizing 20,000 peers takes ~100 ms: on the loop that answers announces it stalled every
    announce behind each /stats, dashboard or /metrics request. Now the records (immutable) are
    copied on the loop and summarized in a worker thread, at most once per ``every`` seconds
    however many readers ask, and not at all when nobody reads.
    """

    def __init__(self, desk: Desk, clock: Callable[[], float], every: float) -> None:
        self._desk, self._clock, self._every = desk, clock, every
        self._lock = trio.Lock()
        self._built_at = float("-inf")
        self._records: list = []
        self._views: dict[tuple[str | None, str | None], dict] = {}
        self._now = 0.0
        self.doc: dict = {"releases": {}, "stores": {}}
        self.page: str | None = None

    def _summary(self, records: list, now: float, release: str | None = None, store: str | None = None) -> dict:
        config = self._desk.config
        return stats.summarize(records, now, peer_ttl=config.effective_peer_ttl, stall_after=3 * config.interval,
                               release=release, store=store)

    async def fresh(self) -> None:
        """Rebuild unless the snapshot is younger than ``every``; concurrent readers share one rebuild."""
        async with self._lock:
            if trio.current_time() - self._built_at < self._every:
                return
            records, now = list(self._desk.store.records()), self._clock()
            self.doc = await trio.to_thread.run_sync(self._summary, records, now)
            self._records, self._now, self._views, self.page = records, now, {}, None
            self._built_at = trio.current_time()

    async def view(self, release: str | None = None, store: str | None = None) -> dict:
        """The document, filtered to a release and/or store, from the same snapshot."""
        await self.fresh()
        if release is None and store is None:
            return self.doc
        key = (release, store)
        if key not in self._views:
            if len(self._views) >= MAX_VIEWS:
                self._views.clear()
            self._views[key] = await trio.to_thread.run_sync(self._summary, self._records, self._now, release, store)
        return self._views[key]

    async def dashboard(self) -> str:
        await self.fresh()
        if self.page is None:
            self.page = await trio.to_thread.run_sync(dashboard.render, self.doc)
        return self.page


def make_app(snapshot: StatsSnapshot, metrics: TrackerMetrics) -> Starlette:
    """An ASGI app showing the snapshot of the desk's swarms."""

    async def stats_route(request: Request) -> Response:
        q = request.query_params
        return JSONResponse(await snapshot.view(release=q.get("release") or None, store=q.get("store") or None))

    async def metrics_route(request: Request) -> Response:
        await snapshot.fresh()
        return Response(await trio.to_thread.run_sync(metrics.exposition), media_type=CONTENT_TYPE)

    async def dashboard_route(request: Request) -> Response:
        return HTMLResponse(await snapshot.dashboard())

    return Starlette(
        routes=[
            Route("/stats", stats_route, methods=["GET"]),
            Route("/metrics", metrics_route, methods=["GET"]),
            Route("/", dashboard_route, methods=["GET"]),
        ]
    )
