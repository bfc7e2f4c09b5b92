"""How a command-line client (``posswarm enroll``, ``posswarm-seeder sales totals``) reaches central: HTTPS only,
verified against central's CA when given, else the system's trust store."""

from __future__ import annotations

import ssl
from pathlib import Path

from posswarm.errors import PosswarmError
from posswarm.identity.tls import central_context


def verify_for(url: str, ca: Path | None, *, what: str) -> ssl.SSLContext | bool:
    """httpx's ``verify`` for ``url``; a one-line PosswarmError for a URL that would send a secret in clear."""
    if not url.startswith("https://"):
        raise PosswarmError(f"{what}: central URL {url!r} must be https:// (a token must not cross the network "
                            "readable); central serves HTTPS")
    return central_context(ca) if ca is not None else True
