"""HOST:PORT text as the processes' flags, configs and catalogs write it (pure)."""

from __future__ import annotations

from posswarm.errors import PosswarmError


def parse_endpoint(text: str, *, what: str = "address") -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` as (host, port); PosswarmError naming ``what`` otherwise."""
    host, sep, port = str(text).rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise PosswarmError(f"{what} {str(text)[:80]!r} is not HOST:PORT with a port of 0-65535")
    return host, int(port)
