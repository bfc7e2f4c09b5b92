"""The HTTP/1.1 subset a tracker speaks (GET with a query, keep-alive): request heads in, response bytes out.

hypercorn tops out near 1,500 requests/s on one core here, under the 5,000 announces/s the
tracker must answer; this subset parses a request head in microseconds. Anything outside it
(a body, chunked encoding, another method) is refused with a status code and the connection closed.
"""

from __future__ import annotations

import dataclasses

MAX_HEAD = 16384  # request line + headers; an announce is ~400 bytes, max_query (default 4 KiB) answers in bencode
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            413: "Request Header Fields Too Large", 500: "Internal Server Error", 501: "Not Implemented"}


@dataclasses.dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: bytes
    keep_alive: bool
    headers: list[tuple[bytes, bytes]]


class HttpError(Exception):
    """A request we refuse before routing; the connection is closed after the answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def head_end(buffer: bytes | bytearray) -> int:
    """Index just past the blank line ending the first request head in ``buffer``, or -1 if none yet."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        if len(buffer) > MAX_HEAD:
            raise HttpError(413, f"request head above {MAX_HEAD} bytes")
        return -1
    if end > MAX_HEAD:
        raise HttpError(413, f"request head above {MAX_HEAD} bytes")
    return end + 4


def parse_head(head: bytes) -> Request:
    """One request head (through the blank line) -> Request, or HttpError."""
    lines = head[:-4].split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not parts[1].startswith(b"/"):
        raise HttpError(400, "malformed request line")
    method, target, version = parts
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise HttpError(400, "unsupported HTTP version")
    headers = []
    keep_alive = version == b"HTTP/1.1"
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            raise HttpError(400, "malformed header line")
        name, value = name.lower(), value.strip()
        if name == b"connection":
            tokens = {t.strip() for t in value.lower().split(b",")}
            keep_alive = b"keep-alive" in tokens if version == b"HTTP/1.0" else b"close" not in tokens
        elif name == b"transfer-encoding" or (name == b"content-length" and value != b"0"):
            raise HttpError(400, "a request body is not accepted here")
        headers.append((name, value))
    if method not in (b"GET", b"HEAD"):
        raise HttpError(405, "only GET is served")
    path, _, query = target.partition(b"?")
    return Request(method.decode("ascii"), path.decode("latin-1"), query, keep_alive, headers)


def encode_response(status: int, body: bytes, content_type: str, *, keep_alive: bool, head_only: bool = False,
                    extra: list[tuple[bytes, bytes]] | None = None) -> bytes:
    lines = [
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}".encode(),
        b"Content-Type: " + content_type.encode("latin-1"),
        b"Content-Length: " + str(len(body)).encode(),
    ]
    lines += [name + b": " + value for name, value in extra or ()]
    if not keep_alive:
        lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + (b"" if head_only else body)
