"""The tracker's read-only pages (starlette): /stats, /metrics and the dashboard at /; announces go to http_server."""

from __future__ import annotations

import json
import pickle
from collections import deque
from collections.abc import Callable
from functools import partial
from urllib.parse import quote

import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from posswarm import logs
from posswarm.errors import PosswarmError
from posswarm.operator_gate import OperatorGate
from tracker import dashboard, dashboard_store, fleet, forked, stats
from tracker.announce import MAX_TEXT
from tracker.desk import Desk
from tracker.metrics import CONTENT_TYPE, TrackerMetrics, stats_exposition

log = logs.get("tracker")
MAX_VIEWS = 64  # filtered /stats documents (?release=, ?store=) and store pages kept per snapshot
MAX_STORE_ID = MAX_TEXT  # characters of a store id in a search or a store page address
FOUND = 200  # stores listed for one search
TREND_EVERY, TREND_POINTS = 60.0, 24 * 60  # rollout progress kept for the fleet page: a point a minute, a day


class StatsSnapshot:
    """The /stats document, dashboard and stats metrics as of the last rebuild, at most ``every`` seconds old.

    Summarizing 20,000 peers takes ~100 ms of CPU, and on the loop that answers announces it
    stalled every announce behind each /stats, dashboard or /metrics request. Now a forked copy of
    the tracker (tracker/forked.py) summarizes and encodes, at most once per ``every`` seconds
    however many readers ask, and not at all when nobody reads; the loop only reads its bytes.

    At 5,000 stores a rebuild takes seconds, so the dashboard's pages do not wait for one: once a
    snapshot exists they are served from it while the next one builds (``run`` keeps that task).
    /stats and /metrics still wait: a monitoring check asks for figures no older than ``every``.
    """

    def __init__(self, desk: Desk, clock: Callable[[], float], every: float) -> None:
        self._desk, self._clock, self._every = desk, clock, every
        self._lock = trio.Lock()
        self._built_at = float("-inf")
        self._now = 0.0
        self._views: dict[tuple[str, str | None, str | None], bytes] = {}
        self.page, self.metrics, self.store_ids = "", b"", []
        self._known: frozenset[str] = frozenset()
        self._background: trio.Nursery | None = None
        self._trend: deque[tuple[float, dict[str, tuple[int, int]]]] = deque(maxlen=TREND_POINTS)

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Hold the nursery the dashboard's background rebuilds run in, until cancelled."""
        async with trio.open_nursery() as nursery:
            self._background = nursery
            task_status.started()
            await trio.sleep_forever()

    def _summary(self, now: float, release: str | None = None, store: str | None = None) -> dict:
        config = self._desk.config
        return stats.summarize(self._desk.store.records(), now, peer_ttl=config.effective_peer_ttl,
                               stall_after=3 * config.interval, release=release, store=store)

    def _everything(self, now: float) -> bytes:
        doc = self._summary(now)  # in the child
        point = (now, {name: (r["devices_installed"], r["devices_total"]) for name, r in doc["releases"].items()})
        page = dashboard.render(doc, trend=[*self._trend, point])
        return pickle.dumps((encode_json(doc).encode(), page, stats_exposition(doc), fleet.store_ids(doc), point))

    async def fresh(self, *, wait: bool = True) -> None:
        """Rebuild unless the snapshot is younger than ``every``; concurrent readers share one rebuild.

        With ``wait=False`` (the dashboard) a reader that finds a snapshot, however old, is served it
        and the rebuild, if one is due, runs in the background.
        """
        if wait or self._background is None or self._built_at == float("-inf"):
            await self._rebuild_if_stale()
        elif trio.current_time() - self._built_at >= self._every and not self._lock.locked():
            self._background.start_soon(self._rebuild_behind)

    async def _rebuild_behind(self) -> None:
        try:
            await self._rebuild_if_stale()
        except PosswarmError as exc:  # no reader waits for this one: the tracker keeps serving the last snapshot
            log.error("stats.snapshot_failed", reason=str(exc))

    async def _rebuild_if_stale(self) -> None:
        async with self._lock:
            if trio.current_time() - self._built_at < self._every:
                return
            now = self._clock()
            built = pickle.loads(await forked.run(partial(self._everything, now)))
            document, self.page, self.metrics, self.store_ids, point = built
            self._known = frozenset(self.store_ids)
            self._views, self._now = {("stats", None, None): document}, now
            if not self._trend or now - self._trend[-1][0] >= TREND_EVERY:
                self._trend.append(point)
            self._built_at = trio.current_time()

    async def view(self, release: str | None = None, store: str | None = None) -> bytes:
        """The document as JSON, filtered to a release and/or store, as of the same ``now``."""
        return await self._view("stats", release, store)

    async def store_page(self, store: str) -> str | None:
        """The dashboard page of one store (its devices), None when no node of it announced."""
        await self.fresh(wait=False)
        if store not in self._known:  # an id nobody announced costs no fork, however many are asked for
            return None
        page = await self._view("page", None, store, wait=False)
        return page.decode() if page else None

    async def _view(self, kind: str, release: str | None, store: str | None, *, wait: bool = True) -> bytes:
        await self.fresh(wait=wait)
        key = (kind, release, store)
        views, now = self._views, self._now  # a rebuild meanwhile must not get this older moment's view
        if key not in views:
            if len(views) >= MAX_VIEWS:
                views = self._views = {("stats", None, None): views[("stats", None, None)]}
            views[key] = await forked.run(partial(self._filtered, kind, now, release, store))
        return views[key]

    def _filtered(self, kind: str, now: float, release: str | None, store: str | None) -> bytes:
        doc = self._summary(now, release, store)  # in the child
        if kind == "stats":
            return encode_json(doc).encode()
        return (dashboard_store.render(doc, store) or "").encode()


def encode_json(value) -> str:
    """``value`` as compact JSON text (what Starlette's JSONResponse wrote)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def make_app(snapshot: StatsSnapshot, metrics: TrackerMetrics, operator: OperatorGate) -> Starlette:
    """An ASGI app showing the snapshot of the desk's swarms to whoever ``operator`` lets through (/healthz to all)."""

    def guarded(what: str, route: Callable) -> Callable:
        async def checked(request: Request) -> Response:
            refused = operator.refusal(request, what)
            return refused if refused is not None else await route(request)

        return checked

    async def stats_route(request: Request) -> Response:
        q = request.query_params
        body = await snapshot.view(release=q.get("release") or None, store=q.get("store") or None)
        return Response(body, media_type="application/json")

    async def metrics_route(request: Request) -> Response:
        await snapshot.fresh()
        return Response(metrics.exposition() + snapshot.metrics, media_type=CONTENT_TYPE)

    async def dashboard_route(request: Request) -> Response:
        await snapshot.fresh(wait=False)
        return HTMLResponse(snapshot.page)

    async def health_route(request: Request) -> Response:
        # For a load balancer's check every second: answers from the loop, never builds a snapshot.
        return Response(b'{"ok":true}', media_type="application/json")

    async def search_route(request: Request) -> Response:
        query = request.query_params.get("q", "").strip()
        if not query or len(query) > MAX_STORE_ID:
            return HTMLResponse(dashboard_store.results(query[:MAX_STORE_ID], [], limit=FOUND), 400)
        await snapshot.fresh(wait=False)
        found = fleet.matching(snapshot.store_ids, query, limit=FOUND)
        if found and found[0].casefold() == query.casefold():  # the id itself: straight to its page
            return RedirectResponse("/store/" + quote(found[0], safe=""), 303)
        return HTMLResponse(dashboard_store.results(query, found, limit=FOUND))

    async def store_route(request: Request) -> Response:
        store = request.path_params["store"]
        if len(store) > MAX_STORE_ID:
            return HTMLResponse(dashboard_store.missing(store[:MAX_STORE_ID]), 404)
        page = await snapshot.store_page(store)
        return HTMLResponse(page) if page else HTMLResponse(dashboard_store.missing(store), 404)

    return Starlette(
        routes=[
            Route("/stats", guarded("tracker /stats", stats_route), methods=["GET"]),
            Route("/metrics", guarded("tracker /metrics", metrics_route), methods=["GET"]),
            Route("/", guarded("tracker dashboard", dashboard_route), methods=["GET"]),
            Route("/healthz", health_route, methods=["GET"]),  # a load balancer's probe: open, and tells nothing
            Route("/stores", guarded("tracker store search", search_route), methods=["GET"]),
            Route("/store/{store:path}", guarded("tracker store page", store_route), methods=["GET"]),
        ]
    )
