"""Follow central's signed revocation list for the tracker: python-tuf refreshes from the catalog's seeder, each poll.

The metadata python-tuf keeps lives in a private directory the tracker makes at start and removes at exit (a
tracker holds no other state on disk): within a run an older snapshot or targets is refused; after a restart
the tracker starts again from the configured root.json and takes central's newest state at its first poll.
A failed refresh keeps the list verified before: the tracker never forgets whom central revoked.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import trio

from posswarm import logs
from posswarm.errors import PosswarmError
from posswarm.trust.client import CentralTrust
from tracker.node_auth import NodeAuthority
from tracker.published import catalog_base, catalog_verify

log = logs.get("tracker")


async def run(nodes: NodeAuthority, root_file: str, catalog_url: str, every: float, *, ca: str | None = None,
              task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Refresh forever, ``nodes.revoked`` following the verified list; ``started()`` after the first refresh,
    successful or not, so start-up never waits on the seeder. PosswarmError before that for an unusable root."""
    source = catalog_base(catalog_url)
    with tempfile.TemporaryDirectory(prefix="posswarm-tracker-tuf-") as directory:
        trust = CentralTrust(Path(root_file), Path(directory), grace_s=0.0)
        trust.verify = catalog_verify(ca)
        trust.revoked = nodes.revoked  # one list, replaced in place by each verified refresh
        try:
            trust.load()
        except PosswarmError as exc:  # named by the file the operator gave, not the private copy
            raise PosswarmError(str(exc).replace(str(trust.dir / "root.json"), root_file)) from None
        started, problem, told = False, None, None
        while True:
            try:
                await trust.refresh(source)
            except PosswarmError as exc:  # unreachable, or refused (a replay, a forgery)
                if str(exc) != problem:  # one line per new problem, not one per poll
                    log.warning("revocations.unreadable", url=source, kept=len(nodes.revoked), reason=str(exc))
                problem = str(exc)
            else:
                if problem is not None or told != len(nodes.revoked):
                    log.info("revocations.followed", url=source, revoked_nodes=len(nodes.revoked))
                problem, told = None, len(nodes.revoked)
            if not started:
                task_status.started()
                started = True
            await trio.sleep(every)
