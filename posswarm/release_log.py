"""How a release's life on a node reads in its log: each state change at its level, a failure as a person reads it."""

from __future__ import annotations

import errno

from posswarm import lifecycle, logs
from posswarm.lifecycle import Event, Record, ReleaseState

log = logs.get("node")


def log_transition(before: Record, after: Record, event: Event) -> None:
    """One log line for each state change, at the level an engineer on call would want it."""
    rid = f"{after.name} {after.version}"
    S = ReleaseState
    if after.state is S.REVOKED:
        log.warning("release.revoked", release=rid, reason=after.reason or "")
    elif after.state is S.STAGED:
        log.info("release.not_installed", release=rid, reason=after.reason)
    elif after.state in lifecycle.READY:
        seconds = round(after.done_at - after.learned_at, 3) if after.done_at else None
        log.info("release.ready", release=rid, state=after.state.value, seconds=seconds, reason=after.reason or "")
    elif after.state is S.FAILED:
        log.error("release.failed", release=rid, after=type(event).__name__, reason=after.reason)
    elif before.state is S.FAILED:
        log.info("release.retry", release=rid, after=before.reason)
    else:
        log.debug("release.state", release=rid, state=after.state.value)


def explain(failure: object) -> str:
    """A failure as a person should read it; a full disk says so and that the node retries by itself."""
    text = str(failure)
    if isinstance(failure, OSError) and failure.errno == errno.ENOSPC or "No space left" in text:
        return f"disk full ({text}); free space on the data disk, the node retries by itself"
    return text
