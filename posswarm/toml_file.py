"""Read a TOML config file into a dict; every failure is one line naming the file, the line and the fix."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from posswarm.errors import PosswarmError

MAX_BYTES = 1 << 20  # a config is a few KiB; a bigger file is the wrong file, not a config to parse
_WHERE = re.compile(r"\s*\((?:at line (\d+), column \d+|at end of document)\)$")


def load_toml(path: Path | str, what: str, *, fix: str) -> dict:
    """The TOML document in ``path``; ``what`` names it in errors ("config", "rollouts config"), ``fix``
    says what to do when the file cannot be read ("pass --config with the node's TOML file")."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise PosswarmError(f"{what} {path}: no such file ({fix})") from None
    except OSError as exc:
        raise PosswarmError(f"{what} {path}: cannot read it ({exc.strerror}; {fix})") from None
    if len(data) > MAX_BYTES:
        raise PosswarmError(f"{what} {path}: larger than {MAX_BYTES >> 10} KiB, not a config ({fix})")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise PosswarmError(f"{what} {path}: not valid TOML, line {line} is not UTF-8 text (save it as UTF-8)") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        first = str(exc).splitlines()[0]
        where = _WHERE.search(first)
        reason = first[: where.start()] if where else first
        if where and where.group(1):
            raise PosswarmError(f"{what} {path}: not valid TOML, line {where.group(1)}: {reason} (fix that line)") from None
        raise PosswarmError(f"{what} {path}: not valid TOML at the end of the file: {reason} "
                            "(finish the last entry)") from None
