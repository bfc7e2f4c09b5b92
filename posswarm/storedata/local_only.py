"""The local API's door: only software on this machine talks to it, never a web page in the kiosk's browser.

A page can POST a "simple" cross-origin request (``text/plain``, no preflight) to 127.0.0.1, and
DNS rebinding (a name the attacker points at 127.0.0.1 after the page loaded) lets it read the
answers. So every request must name this listener in ``Host`` (a rebound name does not), must not
come from a browser context (``Origin``, or ``Sec-Fetch-Site`` other than ``none``, which is a
person typing the URL), and a body must be ``application/json`` (what no simple request can send).
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.responses import JSONResponse

LOCAL_NAMES = frozenset({"127.0.0.1", "localhost", "[::1]"})
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def refusal(method: str, headers: Mapping[str, str], server: tuple[str, int] | None) -> tuple[int, str] | None:
    """``(status, one-line error)`` if the request must be refused, else None (pure).

    ``headers``: lower-case names; ``server``: the listening ``(host, port)``.
    """
    host = headers.get("host", "")
    name, port = _split(host)
    listening = LOCAL_NAMES | ({server[0]} if server else set())
    if name.lower() not in listening or (server is not None and port != str(server[1])):
        return 403, (f"local API: Host {host[:80]!r} is not this listener"
                     f" (use http://127.0.0.1:{server[1] if server else 'PORT'}; a rebound DNS name is refused)")
    if "origin" in headers or headers.get("sec-fetch-site", "none") != "none":
        return 403, ("local API: requests from a web page are refused (Origin or Sec-Fetch-Site header);"
                     " call it from the POS software, not from a browser")
    if method in BODY_METHODS:
        media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media != "application/json":
            return 415, (f"local API: body must be sent as Content-Type: application/json,"
                         f" not {media[:60] or 'none'!r}")
    return None


def _split(host: str) -> tuple[str, str]:
    """``"127.0.0.1:7947"`` -> ``("127.0.0.1", "7947")``; ``"[::1]:7947"`` keeps its brackets; no port = 80."""
    if host.startswith("["):
        name, _, rest = host.partition("]")
        return name + "]", rest.removeprefix(":") or "80"
    name, sep, port = host.partition(":")
    return name, port if sep else "80"


class LocalOnly:
    """ASGI middleware applying :func:`refusal` before any route runs."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            refused = refusal(scope["method"], headers, scope.get("server"))
            if refused is not None:
                status, message = refused
                await JSONResponse({"error": message}, status)(scope, receive, send)
                return
        await self.app(scope, receive, send)
