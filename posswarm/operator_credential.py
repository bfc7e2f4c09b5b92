"""The operator token: its file's text checked, and an ``Authorization`` header (Bearer, or Basic with the token as
password) matched against it in constant time."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from posswarm.errors import PosswarmError

MIN_TOKEN_CHARS = 22  # 22 base64url characters: 132 bits, the least a guessable-online secret should carry
MAX_TOKEN_FILE = 4096
MAX_AUTHORIZATION = 1024  # bytes of an Authorization header looked at; a longer one is no credential of ours
MAKE_ONE = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"


def parse_token(data: bytes, source: str) -> str:
    """The token in a token file's bytes (surrounding whitespace ignored); a one-line PosswarmError naming
    ``source`` if it is not one printable word of at least MIN_TOKEN_CHARS characters."""
    try:
        token = data.decode("ascii").strip()
    except UnicodeDecodeError:
        token = ""
    if len(data) > MAX_TOKEN_FILE or not token.isprintable() or " " in token or len(token) < MIN_TOKEN_CHARS:
        raise PosswarmError(f"{source}: want one token of at least {MIN_TOKEN_CHARS} printable characters "
                            f"(make one: {MAKE_ONE})")
    return token


def presented(authorization: str) -> bytes | None:
    """The secret an ``Authorization`` header carries: a Bearer token, or a Basic password (any user name);
    None when there is none."""
    if len(authorization) > MAX_AUTHORIZATION:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return value.encode()
    if scheme.lower() == "basic" and value:
        try:
            _user, colon, password = base64.b64decode(value, validate=True).partition(b":")
        except (binascii.Error, ValueError):
            return None
        return password if colon and password else None
    return None


class OperatorCredential:
    """Holds only the token's SHA-256: the comparison takes the same time whatever the length of a guess."""

    def __init__(self, token: str) -> None:
        self._digest = hashlib.sha256(token.encode()).digest()

    def admits(self, secret: bytes) -> bool:
        return hmac.compare_digest(hashlib.sha256(secret).digest(), self._digest)
