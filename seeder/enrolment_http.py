"""``POST /enroll``: a node trades a one-time token and a signing request for its certificate and the authority."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from posswarm import logs
from posswarm.errors import PosswarmError
from posswarm.guess_limit import GuessLimit
from posswarm.identity import enrolment_request
from posswarm.identity.certificate import IdentityError
from posswarm.wallclock import now_ms
from seeder.bounded_body import BodyRefused, read_bounded
from seeder.enrolment import certify_with
from seeder.enrolment_tokens import TokenBook, TokenRefused

log = logs.get("seeder.enrolment")


def routes(book: TokenBook | None, enrolment_key: Path | None, limit: GuessLimit | None = None) -> list[Route]:
    """The enrolment route, issuing with ``enrolment_key`` (read at each enrolment: rotation replaces it); without
    a key it only says how to turn enrolment on."""
    if book is None or enrolment_key is None:
        async def closed(request: Request) -> Response:
            return JSONResponse({"error": "enrolment: this seeder issues no credentials (start `posswarm-seeder "
                                 "serve` with --enrolment-key KEYS/enrolment.key)"}, 404)

        return [Route(enrolment_request.ENROL_PATH, closed, methods=["POST"])]
    limit = limit or GuessLimit()
    lock = trio.Lock()  # one SQLite connection: one enrolment at a time

    def issue(ask: enrolment_request.EnrolmentRequest) -> tuple[bytes, bytes, str]:
        with book.consuming(ask.token, node_id=ask.node_id, store=ask.store, role=ask.role,
                            device_class=ask.device_class, now=now_ms()) as grant:
            certificate, authority = certify_with(enrolment_key, ask.public_key, node_id=ask.node_id,
                                                  store=grant.store, role=grant.role, device_class=grant.device_class)
        return certificate, authority, f"{grant.role} {ask.node_id} of store {grant.store} (class {grant.device_class})"

    async def enroll(request: Request) -> Response:
        address = request.client.host if request.client else "unknown"
        wait = limit.wait_s(address, trio.current_time())
        if wait > 0:
            return JSONResponse({"error": f"enrolment from {address}: too many refused attempts; try again in "
                                 f"{wait:.0f} s"}, 429, headers={"retry-after": str(int(wait) + 1)})
        try:
            body = await read_bounded(request, enrolment_request.MAX_REQUEST_BYTES, "enrolment request")
            ask = enrolment_request.parse(body)
            async with lock:
                certificate, authority, who = await trio.to_thread.run_sync(issue, ask)
        except BodyRefused as exc:
            limit.refused(address, trio.current_time())
            return JSONResponse({"error": str(exc)}, exc.status)
        except (TokenRefused, IdentityError) as exc:
            limit.refused(address, trio.current_time())
            log.warning("enrolment.refused", client=address, reason=str(exc))
            return JSONResponse({"error": str(exc)}, 403 if isinstance(exc, TokenRefused) else 400)
        except (PosswarmError, sqlite3.Error) as exc:  # central's own fault (its key, its disk): not the node's
            log.error("enrolment.failed", client=address, reason=str(exc))
            return JSONResponse({"error": f"enrolment: central could not issue ({exc}); try again later"}, 503)
        log.info("enrolment.issued", client=address, node=who)
        return Response(enrolment_request.answer(certificate, authority), media_type="application/json")

    return [Route(enrolment_request.ENROL_PATH, enroll, methods=["POST"])]
