"""HOST:PORT text (``10.20.0.1:7946``, ``till-03:8080``, ``[::1]:6969``) as a checked (host, port) pair."""

from __future__ import annotations

import ipaddress
import re

from posswarm.errors import PosswarmError

MAX_TEXT = 270  # a 253-character DNS name, brackets, a colon and five digits; longer is not an address
_HOST_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")


def parse_endpoint(text: str, *, what: str, example: str = "10.20.0.1:8080", any_port: bool = False,
                   ip_only: bool = False) -> tuple[str, int]:
    """(host, port) of ``text``, or a one-line PosswarmError naming ``what``, the reason and an example.

    ``any_port`` lets port 0 through (a listening address: any free port); ``ip_only`` refuses host
    names (a peer address handed to libtorrent). An IPv6 address needs brackets, as in ``[::1]:80``,
    and comes back without them.
    """
    reason = _refusal(text, any_port=any_port, ip_only=ip_only)
    if reason is not None:
        shown = repr(text)[:80] if isinstance(text, str) else type(text).__name__
        raise PosswarmError(f"{what} {shown} is not HOST:PORT: {reason} (e.g. {example})")
    host, _, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") else host
    return (str(ipaddress.ip_address(host)) if ip_only else host), int(port)


def _refusal(text, *, any_port: bool, ip_only: bool) -> str | None:
    """Why ``text`` is not an endpoint, or None when it is one."""
    if not isinstance(text, str):
        return "not text"
    if len(text) > MAX_TEXT:
        return f"{len(text)} characters, more than an address has"
    host, sep, port = text.rpartition(":")
    if not sep:
        return "no port"
    if not port.isascii() or not port.isdigit() or len(port) > 5:
        return f"port {port[:8]!r} is not a number"
    lowest = 0 if any_port else 1
    if not lowest <= int(port) <= 65535:
        return f"port {int(port)} is out of range ({lowest}..65535{'; 0 = any free port' if any_port else ''})"
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return f"{host[:50]!r} is not an IPv6 address"
        return None
    if ":" in host:
        return "an IPv6 address needs brackets, as in [::1]:80"
    if not host:
        return "no host"
    try:
        ipaddress.IPv4Address(host)
        return None
    except ValueError:
        pass
    if ip_only or re.fullmatch(r"[0-9.]+", host):
        return f"{host[:50]!r} is not an IP address"
    if not _HOST_NAME.fullmatch(host):
        return f"{host[:50]!r} is not a host name or IP address"
    return None
