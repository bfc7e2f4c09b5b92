"""The sales stream's cursors and pages for the data platform (pure): a consumer's opaque place in central's sales,
checked before it is used, and one page of sales after it as JSON lines."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

VERSION = "s1."  # a cursor names a stored sale's position; the prefix lets a later form be told from this one
MAX_CURSOR = 32  # "s1." and a 63-bit position fit in 23 characters
MAX_POSITION = (1 << 63) - 1  # PostgreSQL's BIGINT
DEFAULT_LIMIT = 1000
# A page is read under the writer's lock and built in memory: 10,000 sales are ~3 MB of JSON.
MAX_LIMIT = 10_000
START_AGAIN = "leave ?after= out to read from the first sale"


class StreamRefused(ValueError):
    """A request the stream cannot answer; ``status`` is the HTTP status to refuse it with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def encode(position: int) -> str:
    """The cursor after the sale at ``position`` (0: before the first sale)."""
    return f"{VERSION}{position}"


def decode(cursor: str | None) -> int:
    """The position a cursor this stream gave stands for (None or "": the start); StreamRefused naming it if not."""
    if not cursor:
        return 0
    digits = cursor[len(VERSION):]
    if (len(cursor) > MAX_CURSOR or not cursor.startswith(VERSION) or not digits.isascii() or not digits.isdigit()
            or digits != str(int(digits)) or int(digits) > MAX_POSITION):
        shown = repr(cursor[:MAX_CURSOR]) + ("..." if len(cursor) > MAX_CURSOR else "")
        raise StreamRefused(f"sales stream: cursor {shown} is not one this stream gave; pass the \"next\" of the "
                            f"page before, as it came, or {START_AGAIN}")
    return int(digits)


def parse_limit(text: str | None) -> int:
    """How many sales a page may hold: ``?limit=`` within 1..MAX_LIMIT, DEFAULT_LIMIT when absent."""
    if text is None or text == "":
        return DEFAULT_LIMIT
    if not (text.isascii() and text.isdigit() and len(text) <= 6 and 1 <= int(text) <= MAX_LIMIT):
        raise StreamRefused(f"sales stream: limit {text[:12]!r} is not a number of sales from 1 to {MAX_LIMIT}; "
                            f"give one, or leave it out for {DEFAULT_LIMIT}")
    return int(text)


def check_behind(after: int, top: int) -> None:
    """A cursor past every stored sale comes from another or an older (restored) database: reading on would skip
    the sales that take those positions now."""
    if after > top:
        raise StreamRefused(f"sales stream: cursor {encode(after)} is past the last sale this database holds "
                            f"({encode(top)}); was central's sales database replaced or restored from a backup? The "
                            f"consumer holds every sale up to {encode(top)}: give it that cursor to go on", 409)


def page(records: Sequence[tuple[int, Mapping]], after: int, limit: int) -> str:
    """JSON lines: each sale's record with its own ``cursor``, in position order, then ``{"next", "sales", "more"}``;
    a page cut short on the way loses its last line, so a reader knows not to commit it."""
    lines = [json.dumps({**record, "cursor": encode(position)}, separators=(",", ":")) for position, record in records]
    last = records[-1][0] if records else after
    lines.append(json.dumps({"next": encode(last), "sales": len(records), "more": len(records) >= limit},
                            separators=(",", ":")))
    return "\n".join(lines) + "\n"
