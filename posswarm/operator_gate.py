"""Who may read the operator pages (central's /sales/totals, the tracker's stats and dashboard, a cache's /metrics):
the holder of the operator token, with wrong guesses limited per address."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from posswarm.errors import PosswarmError
from posswarm.guess_limit import GuessLimit
from posswarm.operator_credential import MAX_TOKEN_FILE, OperatorCredential, parse_token, presented

REASONS = ("missing", "wrong", "limited")  # why a request was refused, as the tracker's metrics count it


def read_token(path: Path | str, *, source: str = "--operator-token-file") -> str:
    """The token in the file at ``path``; a one-line PosswarmError naming ``source`` and the file if unusable."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_TOKEN_FILE + 1)
    except OSError as exc:
        raise PosswarmError(f"{source} {path}: cannot read it ({exc.strerror})") from None
    return parse_token(data, f"{source} {path}")


class OperatorGate:
    """Lets a request through only with the operator token (``Authorization: Bearer <token>``, or HTTP Basic with
    the token as password); with no token it is shut to everyone, or open to everyone when ``open_to_all``.

    ``secret`` names the token in refusals; ``off`` says how to turn a shut gate on; ``fix`` how a client sends
    the token; ``challenge`` is the ``WWW-Authenticate`` value (``Basic ...`` makes a browser ask for it).
    """

    def __init__(self, token: str | None, *, off: str = "", fix: str = "Authorization: Bearer <token>",
                 challenge: str = 'Bearer realm="posswarm"', as_json: bool = False, open_to_all: bool = False,
                 on_refused: Callable[[str], None] | None = None, secret: str = "operator token") -> None:
        self._credential = OperatorCredential(token) if token else None
        self._off, self._fix, self._challenge, self._json, self._secret = off, fix, challenge, as_json, secret
        self._open_to_all = open_to_all and token is None
        self._on_refused = on_refused or (lambda reason: None)
        self._limit = GuessLimit()

    def refusal(self, request: Request, what: str) -> Response | None:
        """None if ``request`` may read ``what``, else the one-line answer refusing it."""
        if self._open_to_all:
            return None
        if self._credential is None:
            return self._answer(403, f"{what}: {self._off}")
        address = request.client.host if request.client else "-"
        now = time.monotonic()
        wait = self._limit.wait_s(address, now)
        if wait > 0:  # not even looked at: a guesser must not learn which of its guesses was right
            self._on_refused("limited")
            return self._answer(429, f"{what}: too many wrong {self._secret}s from {address}; retry in "
                                f"{math.ceil(wait)} s", {"retry-after": str(math.ceil(wait))})
        secret = presented(request.headers.get("authorization", ""))
        if secret is not None and self._credential.admits(secret):
            return None
        if secret is not None:  # no credential at all is a first visit, not a guess: a browser is then asked
            self._limit.refused(address, now)
        self._on_refused("missing" if secret is None else "wrong")
        return self._answer(401, f"{what}: needs the {self._secret} ({self._fix})",
                            {"www-authenticate": self._challenge})

    def _answer(self, status: int, line: str, headers: dict[str, str] | None = None) -> Response:
        if self._json:
            return JSONResponse({"error": line}, status, headers=headers)
        return PlainTextResponse(line + "\n", status, headers=headers)
