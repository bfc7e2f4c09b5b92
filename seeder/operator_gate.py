"""The operator credential on central's read-only operator endpoints (``/sales/totals``): a bearer token from
``serve --operator-token-file``; without one those endpoints stay shut."""

from __future__ import annotations

import hmac
from pathlib import Path

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from posswarm.errors import PosswarmError

MIN_TOKEN_CHARS = 22  # 22 base64url characters: 132 bits, the least a guessable-online secret should carry
MAX_TOKEN_FILE = 4096


def read_token(path: Path) -> str:
    """The token in ``path`` (surrounding whitespace ignored); a one-line PosswarmError if unusable."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_TOKEN_FILE + 1)
    except OSError as exc:
        raise PosswarmError(f"--operator-token-file {path}: cannot read it ({exc.strerror})") from None
    try:
        token = data.decode("ascii").strip()
    except UnicodeDecodeError:
        token = ""
    if len(data) > MAX_TOKEN_FILE or not token.isprintable() or " " in token or len(token) < MIN_TOKEN_CHARS:
        raise PosswarmError(f"--operator-token-file {path}: want one token of at least {MIN_TOKEN_CHARS} printable "
                            "characters (make one: python3 -c 'import secrets; print(secrets.token_urlsafe(32))')")
    return token


class OperatorGate:
    """Lets a request through only with ``Authorization: Bearer <token>``; shut to everyone when there is no token."""

    def __init__(self, token: str | None) -> None:
        self._token = token.encode() if token else None

    @property
    def open(self) -> bool:
        return self._token is not None

    def refusal(self, request: Request, what: str) -> Response | None:
        """None if ``request`` carries the operator token, else the one-line JSON answer refusing it."""
        if self._token is None:
            return JSONResponse({"error": f"{what}: operator endpoints are off on this seeder (start `posswarm-seeder "
                                 "serve` with --operator-token-file)"}, 403)
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), self._token):
            return JSONResponse({"error": f"{what}: needs the operator token (Authorization: Bearer ...; "
                                 "`posswarm-seeder sales totals --operator-token-file` sends it)"}, 401,
                                headers={"www-authenticate": 'Bearer realm="posswarm central"'})
        return None


