"""What can happen to a release: the events the drivers report to the life cycle (pure)."""

from __future__ import annotations

from dataclasses import dataclass

from posswarm.manifest import Manifest


@dataclass(frozen=True)
class Listed:
    """The catalog lists the release for this node (again): fetch its manifest unless it is already known."""


@dataclass(frozen=True)
class ManifestArrived:
    """Its manifest's signature checked out and its torrent matches it."""

    manifest: Manifest


@dataclass(frozen=True)
class ManifestBad:
    """Its manifest or torrent failed a signature or validation check (a verdict: remembered)."""

    reason: str


@dataclass(frozen=True)
class Unreachable:
    """Its manifest could not be fetched (a network failure: not a verdict, retried on the next poll)."""

    reason: str


@dataclass(frozen=True)
class Resumed:
    """An earlier run of this node laid the release out; its manifest was re-verified."""

    manifest: Manifest


@dataclass(frozen=True)
class TorrentFinished:
    """libtorrent has every piece (each passed its SHA-256 merkle check)."""


@dataclass(frozen=True)
class TorrentFailed:
    reason: str


@dataclass(frozen=True)
class ChunksChecked:
    """The BLAKE3 check of every chunk ended: ``bad`` chunks failed it (0 = all good)."""

    ticket: int
    bad: int = 0
    first_bad: str = ""


@dataclass(frozen=True)
class ScrubFoundBad:
    """A periodic re-read found chunks of a served or running release rotten on disk."""

    bad: int
    first_bad: str


@dataclass(frozen=True)
class InstallDone:
    """The payload was assembled, its BLAKE3 matched, ``current`` switched; ``problem`` is a failed hook or
    health check (the install switched back to the previous version, or held it when there was none)."""

    ticket: int
    problem: str | None = None


@dataclass(frozen=True)
class InstallFailed:
    """Assembly or the switch failed for a reason that may pass (a full disk, a chunk gone bad)."""

    ticket: int
    reason: str


@dataclass(frozen=True)
class RolloutChanged:
    """Central's signed rollout for this release changed (``Facts.decision`` is the new one)."""


@dataclass(frozen=True)
class InstallsChanged:
    """``installed/NAME`` changed (another version installed, an operator's ``posswarm rollback``)."""


@dataclass(frozen=True)
class LayOutFailed:
    """Laying the release out or putting it in the torrent session failed for a reason that may pass (a full disk)."""

    reason: str


@dataclass(frozen=True)
class RetryDue:
    """The catalog poll came round; ``torrent`` is the torrent's own state: finished, error, running, or absent
    (not in the session: its lay-out failed)."""

    torrent: str


Event = (Listed | ManifestArrived | ManifestBad | Unreachable | Resumed | TorrentFinished | TorrentFailed
         | ChunksChecked | ScrubFoundBad | InstallDone | InstallFailed | RolloutChanged | InstallsChanged | LayOutFailed | RetryDue)
