"""A request body read no further than a limit: refused on its Content-Length before any of it is read,
and cut off while streaming when it has none (or lies)."""

from __future__ import annotations

from starlette.requests import Request

from posswarm.errors import PosswarmError


class BodyRefused(PosswarmError):
    """A body not read: over the limit, or a Content-Length that is no number (``status`` is the HTTP answer)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def read_bounded(request: Request, limit: int, what: str) -> bytes:
    """The body of ``request`` if it is at most ``limit`` bytes; a BodyRefused naming ``what`` otherwise."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit() or len(declared) > 19:
            raise BodyRefused(400, f"{what}: Content-Length {declared[:24]!r} is not a byte count")
        if int(declared) > limit:
            raise BodyRefused(413, f"{what}: body of {declared} bytes is over {limit}; send smaller batches")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyRefused(413, f"{what}: body over {limit} bytes; send smaller batches")
        chunks.append(chunk)
    return b"".join(chunks)
