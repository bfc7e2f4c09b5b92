"""The states of a release on a node, what the node knows beside them, and the record of one release (pure)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from posswarm.manifest import Manifest
from posswarm.rollout import Decision

#: Rounds of "chunks passed libtorrent's SHA checks but not BLAKE3" before a release is failed for good.
MAX_BAD_CHUNK_ROUNDS = 3


class ReleaseState(enum.StrEnum):
    """Where one release stands on this node (the value is what status.json and the tracker show)."""

    LISTED = "listed"  # meant for this node by the catalog; its signed manifest is being fetched and checked
    REFUSED = "refused"  # its manifest failed a signature or validation check, or may not run here: never fetched
    DOWNLOADING = "downloading"  # laid out (reused chunks linked in) and swarming; the rest arrives from peers
    VERIFYING = "verifying"  # every piece passed libtorrent's SHA checks; BLAKE3 of each chunk is being checked
    STAGED = "staged"  # verified and kept, but central's rollout does not let it install here now (paused, ring, window)
    INSTALLING = "installing"  # assembling the payload, checking its BLAKE3, switching `current`, health check
    INSTALLED = "installed"  # device: the version that runs (`current`)
    BOOT_PENDING = "boot_pending"  # device: image written into the other boot slot, checked, armed for one trial boot
    SEEDING = "seeding"  # cache: verified and offered to the store's devices
    PREVIOUS = "previous"  # device: the version before `current`, kept to roll back to
    SUPERSEDED = "superseded"  # device: verified, but a newer version runs; kept to seed until collected
    ROLLED_BACK = "rolled_back"  # device: its health check failed or an operator rolled it back; held for good
    REVOKED = "revoked"  # central revoked it; a device that ran it went back to its previous version
    FAILED = "failed"  # a failure that may pass (disk full, torrent error) is retried; bad chunks 3 rounds are not


#: States in which a release's chunks are all there and verified (it can be seeded and collected).
READY = frozenset({ReleaseState.INSTALLED, ReleaseState.SEEDING, ReleaseState.PREVIOUS, ReleaseState.SUPERSEDED,
                   ReleaseState.ROLLED_BACK, ReleaseState.STAGED, ReleaseState.BOOT_PENDING})
#: States whose chunks a scrub re-reads: what the node serves and runs.
SCRUBBED = frozenset({ReleaseState.SEEDING, ReleaseState.INSTALLED})
#: States that count as "installed" for the tracker (a cache's seeding is its installed).
ANNOUNCED_INSTALLED = frozenset({ReleaseState.INSTALLED, ReleaseState.SEEDING})
#: Device states that only say which slot of ``installed/NAME`` the version is in; the disk decides them.
ON_DISK = frozenset({ReleaseState.INSTALLED, ReleaseState.PREVIOUS, ReleaseState.SUPERSEDED,
                      ReleaseState.ROLLED_BACK, ReleaseState.BOOT_PENDING})


# ---- what the node knows -------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeFacts:
    """Who this node is: the same for every release."""

    role: str  # "cache" or "device"
    store: str
    device_class: str

    @property
    def is_cache(self) -> bool:
        return self.role == "cache"


@dataclass(frozen=True)
class Installed:
    """What ``installed/NAME`` (or the boot slots) says for one release name: running, kept for rollback, held after a
    rollback, waiting for its trial boot."""

    current: str | None = None
    previous: str | None = None
    held: frozenset[str] = frozenset()
    pending: str | None = None  # boot slots: written and armed for a trial boot not yet made


@dataclass(frozen=True)
class Facts:
    """Everything outside the record that a decision about one release may read."""

    node: NodeFacts
    installed: Installed = Installed()
    decision: Decision | None = None  # central's signed rollout for this release here; None = follow the manifest
    newest_carried: str | None = None  # cache: the newest version of this name it carries


# ---- the record of one release -------------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """One release as this node's life cycle sees it. ``ticket`` numbers the verify/install in flight, so a
    result that arrives after the release moved on (a scrub, a refetch) is recognised as stale."""

    name: str
    version: str
    state: ReleaseState = ReleaseState.LISTED
    manifest: Manifest | None = None
    reason: str | None = None  # why it is refused, failed, staged, rolled back or revoked; None otherwise
    retry: bool = False  # FAILED for a reason that may pass: retried on every catalog poll
    bad_chunk_rounds: int = 0
    ticket: int = 0
    learned_at: float = 0.0
    done_at: float | None = None

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def ready(self) -> bool:
        return self.state in READY


def listed(name: str, version: str, now: float) -> Record:
    """A new record for a release the catalog lists for this node."""
    return Record(name, version, learned_at=now)
