"""Read a small file whole, bounded: a one-line PosswarmError when it cannot be read or is over its limit."""

from __future__ import annotations

from pathlib import Path

from posswarm.errors import PosswarmError


def read_capped(path: Path | str, limit: int, what: str, *, too_big: str) -> bytes:
    """At most ``limit`` bytes of ``path``, or an error naming ``what`` and the file; ``too_big`` says what a larger
    file is not ("not a CA bundle")."""
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise PosswarmError(f"{what} {path}: cannot read it ({exc.strerror})") from None
    if len(data) > limit:
        raise PosswarmError(f"{what} {path}: over {limit} bytes; {too_big}")
    return data
