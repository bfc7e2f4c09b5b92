"""Wake the seeder's scan the moment central's signed state is rewritten (inotify on RELEASES/.tuf).

Every publish, promote, pause, revocation and key rotation ends by writing the repository's metadata, so one
watch on that one directory sees them all without walking the release tree. Where inotify sees nothing (the
directory on NFS written by another host), the seeder's periodic scan still finds the change.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import trio
import watchfiles

from posswarm import logs

log = logs.get("seeder")

# Changes that come within this many ms of each other are one wake-up: a publish writes targets, snapshot
# and timestamp one after the other.
SETTLE_MS = 20
# How long the watch waits before it looks again for a directory not made yet, or after inotify failed.
MISSING_RETRY_S = 5.0


async def run(directory: Path, wake: Callable[[], None], *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Call ``wake()`` after every burst of changes under ``directory`` (not recursive)."""
    task_status.started()
    said = False
    while True:
        if not directory.is_dir():
            await trio.sleep(MISSING_RETRY_S)  # a seeder started before `keys init`: the scan covers it meanwhile
            continue
        try:
            async for _changes in watchfiles.awatch(directory, recursive=False, debounce=1000, step=SETTLE_MS,
                                                    rust_timeout=5000, yield_on_timeout=False):
                wake()
        except (OSError, RuntimeError) as exc:  # no inotify (limits reached, an exotic filesystem)
            if not said:
                log.warning("repository.watch_unavailable", dir=str(directory),
                            reason=f"{exc}; new releases are found by the periodic scan instead")
                said = True
            await trio.sleep(MISSING_RETRY_S)
