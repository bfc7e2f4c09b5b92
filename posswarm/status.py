"""status.json: a node's own account of itself, rewritten atomically, read by ``posswarm status`` and the demo."""

from __future__ import annotations

import json
import os
from pathlib import Path

from posswarm.errors import PosswarmError


def write(path: Path, doc: dict) -> None:
    """Replace ``path`` atomically so a reader never sees half a document."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True))
    os.replace(tmp, path)  # no fsync: it is rewritten every second and only describes the node


def read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise PosswarmError(f"status {path}: not there yet (is the node running with that data_dir?)") from None
    except (OSError, ValueError) as exc:
        raise PosswarmError(f"status {path}: unreadable ({exc})") from None
