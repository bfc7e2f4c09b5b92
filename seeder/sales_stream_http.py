"""``GET /sales/stream?after=CURSOR&limit=N``: central's sales in position order, a page at a time, for whoever
holds the operator token (the data platform's consumer)."""

from __future__ import annotations

import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from posswarm import logs
from posswarm.errors import PosswarmError
from posswarm.operator_gate import OperatorGate
from seeder.sales import SalesStore, sale_record
from seeder.sales_stream import StreamRefused, check_behind, decode, page, parse_limit

log = logs.get("seeder.sales")


def routes(reader: SalesStore, operator: OperatorGate) -> list[Route]:
    """The stream route, reading on ``reader``: a connection of its own, not the writer's. A page of 10,000 sales
    took 1.0 s to read and unpack from SQLite at load average 12 on the shared 2-core machine; on the writer's
    connection, ingest would wait that long behind it (WAL readers and PostgreSQL readers block no writer)."""
    turn = trio.Lock()  # one connection: one page at a time

    async def stream(request: Request) -> Response:
        if (refused := operator.refusal(request, "sales stream")) is not None:
            return refused
        try:
            after = decode(request.query_params.get("after"))
            limit = parse_limit(request.query_params.get("limit"))
            async with turn:
                rows, top = await trio.to_thread.run_sync(reader.after, after, limit)
            check_behind(after, top)
        except StreamRefused as exc:
            log.warning("sales.stream_refused", reason=str(exc))
            return JSONResponse({"error": str(exc)}, exc.status)
        except PosswarmError as exc:
            log.error("sales.stream_failed", reason=str(exc))
            return JSONResponse({"error": str(exc)}, 503)
        body = page([(position, sale_record(store, sale)) for position, store, sale in rows], after, limit)
        return Response(body, media_type="application/x-ndjson")

    return [Route("/sales/stream", stream)]
