"""An HTTP proxy in front of a till's local API that drops the Idempotency-Key: the build that ignores the POS's txn id.

Only for showing that the chaos verdict can fail: through it a POS retry after a lost answer
becomes a second sale, exactly what a till without idempotent sales would record.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from posswarm import http_service

# Hop-by-hop headers and the ones httpx sets itself for the upstream request.
_DROPPED = frozenset({"idempotency-key", "host", "content-length", "connection", "keep-alive", "transfer-encoding"})


def keyless_app(upstream: Callable[[], str | None], client: httpx.AsyncClient) -> Starlette:
    """Forward every request to ``upstream()`` (the till's current API URL) without its Idempotency-Key."""

    async def forward(request: Request) -> Response:
        base = upstream()
        if base is None:
            return JSONResponse({"error": "keyless proxy: the till's API is not up yet; retry"}, 502)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROPPED}
        try:
            answer = await client.request(request.method, f"{base}{request.url.path}", content=await request.body(),
                                          headers=headers, params=request.query_params)
        except httpx.HTTPError as exc:
            return JSONResponse({"error": f"keyless proxy: till {base}: {type(exc).__name__}; retry"}, 502)
        return Response(answer.content, answer.status_code, media_type=answer.headers.get("content-type"))

    return Starlette(routes=[Route("/{path:path}", forward, methods=["GET", "POST"])])


async def run(upstream: Callable[[], str | None], *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Serve on 127.0.0.1 (any free port) until cancelled; ``task_status.started(url)`` once bound."""
    async with httpx.AsyncClient(timeout=30.0) as client, trio.open_nursery() as nursery:
        url = await nursery.start(http_service.run, keyless_app(upstream, client), "127.0.0.1", 0)
        task_status.started(url)
