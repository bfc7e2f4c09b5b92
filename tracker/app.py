"""The tracker's read-only pages (starlette): /stats, /metrics and the dashboard at /; announces go to http_server."""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from functools import partial

import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from tracker import dashboard, forked, stats
from tracker.desk import Desk
from tracker.metrics import CONTENT_TYPE, TrackerMetrics, stats_exposition

MAX_VIEWS = 64  # filtered /stats documents (?release=, ?store=) kept per snapshot


class StatsSnapshot:
    """The /stats document, dashboard and stats metrics as of the last rebuild, at most ``every`` seconds old.

    Summarizing 20,000 peers takes ~100 ms of CPU, and on the loop that answers announces it
    stalled every announce behind each /stats, dashboard or /metrics request. Now a forked copy of
    the tracker (tracker/forked.py) summarizes and encodes, at most once per ``every`` seconds
    however many readers ask, and not at all when nobody reads; the loop only reads its bytes.
    """

    def __init__(self, desk: Desk, clock: Callable[[], float], every: float) -> None:
        self._desk, self._clock, self._every = desk, clock, every
        self._lock = trio.Lock()
        self._built_at = float("-inf")
        self._now = 0.0
        self._views: dict[tuple[str | None, str | None], bytes] = {}
        self.page, self.metrics = "", b""

    def _summary(self, now: float, release: str | None = None, store: str | None = None) -> dict:
        config = self._desk.config
        return stats.summarize(self._desk.store.records(), now, peer_ttl=config.effective_peer_ttl,
                               stall_after=3 * config.interval, release=release, store=store)

    def _everything(self, now: float) -> bytes:
        doc = self._summary(now)  # in the child
        return pickle.dumps((encode_json(doc).encode(), dashboard.render(doc), stats_exposition(doc)))

    async def fresh(self) -> None:
        """Rebuild unless the snapshot is younger than ``every``; concurrent readers share one rebuild."""
        async with self._lock:
            if trio.current_time() - self._built_at < self._every:
                return
            now = self._clock()
            document, page, metrics = pickle.loads(await forked.run(partial(self._everything, now)))
            self._views, self._now, self.page, self.metrics = {(None, None): document}, now, page, metrics
            self._built_at = trio.current_time()

    async def view(self, release: str | None = None, store: str | None = None) -> bytes:
        """The document as JSON, filtered to a release and/or store, as of the same ``now``."""
        await self.fresh()
        key = (release, store)
        if key not in self._views:
            if len(self._views) >= MAX_VIEWS:
                self._views = {(None, None): self._views[(None, None)]}
            now = self._now
            self._views[key] = await forked.run(lambda: encode_json(self._summary(now, release, store)).encode())
        return self._views[key]


def encode_json(value) -> str:
    """``value`` as compact JSON text (what Starlette's JSONResponse wrote)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def make_app(snapshot: StatsSnapshot, metrics: TrackerMetrics) -> Starlette:
    """An ASGI app showing the snapshot of the desk's swarms."""

    async def stats_route(request: Request) -> Response:
        q = request.query_params
        body = await snapshot.view(release=q.get("release") or None, store=q.get("store") or None)
        return Response(body, media_type="application/json")

    async def metrics_route(request: Request) -> Response:
        await snapshot.fresh()
        return Response(metrics.exposition() + snapshot.metrics, media_type=CONTENT_TYPE)

    async def dashboard_route(request: Request) -> Response:
        await snapshot.fresh()
        return HTMLResponse(snapshot.page)

    return Starlette(
        routes=[
            Route("/stats", stats_route, methods=["GET"]),
            Route("/metrics", metrics_route, methods=["GET"]),
            Route("/", dashboard_route, methods=["GET"]),
        ]
    )
