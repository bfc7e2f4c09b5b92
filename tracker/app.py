"""The tracker's HTTP routes (starlette): /announce, /scrape, /stats, glued to the pure cores."""

from __future__ import annotations

import random
from collections.abc import Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from posswarm import logs
from tracker import announce, handout, stats
from tracker.config import TrackerConfig
from tracker.peerstore import PeerStore

BENCODE = "text/plain"  # what BEP 3 trackers have always sent; clients ignore it


def make_app(config: TrackerConfig, store: PeerStore, clock: Callable[[], float], *, rng: random.Random | None = None):
    """An ASGI app serving ``store``; ``clock`` gives ``now`` in seconds (trio.current_time in the server)."""
    rank = handout.policy(config.policy)

    async def announce_route(request: Request) -> Response:
        remote = request.client.host if request.client else None
        try:
            a = announce.parse_announce(
                request.scope["query_string"], remote, max_query=config.max_query, max_numwant=config.max_numwant
            )
        except announce.BadRequest as exc:
            logs.get("tracker").info("announce.bad", reason=str(exc), remote=remote)
            return Response(announce.encode_failure(str(exc)), media_type=BENCODE)
        now = clock()
        store.record(a, now)
        peers = []
        if a.event != "stopped":
            chosen = handout.hand_out(
                rank,
                a,
                store.swarm(a.info_hash, now),
                numwant=config.numwant if a.numwant is None else a.numwant,
                cross_store=config.cross_store,
                rng=rng,
            )
            peers = [(p.ip, p.port, p.peer_id) for p in chosen]
        complete, incomplete, _ = store.counts(a.info_hash, now)
        logs.get("tracker").debug(
            "announce", node=a.node_key, store=a.store, role=a.role, what=a.event, left=a.left, handed=len(peers)
        )
        body = announce.encode_announce(
            interval=config.interval,
            min_interval=config.effective_min_interval,
            complete=complete,
            incomplete=incomplete,
            peers=peers,
            compact=a.compact,
        )
        return Response(body, media_type=BENCODE)

    async def scrape_route(request: Request) -> Response:
        try:
            hashes = announce.parse_scrape(request.scope["query_string"], max_query=config.max_query)
        except announce.BadRequest as exc:
            logs.get("tracker").info("scrape.bad", reason=str(exc))
            return Response(announce.encode_failure(str(exc)), media_type=BENCODE)
        now = clock()
        known = set(store.info_hashes())
        # BEP 48: no info_hash = every torrent; unknown hashes are simply absent from ``files``.
        wanted = hashes or sorted(known)
        files = {h: store.counts(h, now) for h in wanted if h in known}
        return Response(announce.encode_scrape(files), media_type=BENCODE)

    async def stats_route(request: Request) -> Response:
        q = request.query_params
        doc = stats.summarize(
            store.records(),
            clock(),
            peer_ttl=config.effective_peer_ttl,
            release=q.get("release") or None,
            store=q.get("store") or None,
        )
        return JSONResponse(doc)

    return Starlette(
        routes=[
            Route("/announce", _never_a_traceback(announce_route), methods=["GET"]),
            Route("/scrape", _never_a_traceback(scrape_route), methods=["GET"]),
            Route("/stats", stats_route, methods=["GET"]),
        ]
    )


def _never_a_traceback(route):
    # BEP 3 clients only understand a bencoded dict; a bug of ours must still reach them as
    # a failure reason, and reach the log with its traceback.
    async def guarded(request: Request) -> Response:
        try:
            return await route(request)
        except Exception:
            logs.get("tracker").exception("route.crashed", path=request.url.path)
            return Response(announce.encode_failure("tracker internal error (see the tracker's log)"), media_type=BENCODE)

    return guarded
