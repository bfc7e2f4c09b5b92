"""`posswarm verify RELEASE_DIR --pubkey PUB`: check a release directory end to end."""

from __future__ import annotations

import sys
from pathlib import Path

from posswarm.errors import PosswarmError
from posswarm.keys import load_public_key
from posswarm.release import verify_release


def verify_main(release_dir: str, pubkey: str) -> int:
    """0 and ``ok: <release id> (<n> chunks, <bytes>)`` on stdout, or 1 and one line on stderr."""
    try:
        m = verify_release(Path(release_dir), load_public_key(Path(pubkey)))
    except PosswarmError as exc:
        print(f"posswarm verify: {exc}", file=sys.stderr)
        return 1
    print(f"ok: {m.release_id} ({len(m.unique_chunks())} chunks, {m.total_size} bytes)")
    return 0
