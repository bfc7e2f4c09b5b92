"""The release life cycle: every decision a node makes about one release, as a pure state machine.

``step(record, event, facts, now)`` is the whole of it: a release's record and one event in, the new
record and the effects the drivers must carry out (posswarm/release_keeper.py, posswarm/catalog/follower.py)
out. Nothing here does I/O or reads a clock; what the node knows about its disk and central's rollout
comes in as ``Facts``. Events that do not apply to a state (a late result, a repeated notice) change
nothing, so drivers can report whatever happened without first asking whether it still matters.

States, in the words ``posswarm status`` shows::

    listed ──ManifestArrived──> downloading ──TorrentFinished──> verifying ──ChunksChecked(good)──> installing
       │  (admission refuses)       ^   │                           │  │                             │
       └──> refused                 │   └─TorrentFailed─> failed    │  └──> staged (rollout holds it) │
                                    └──ChunksChecked(bad)───────────┘       seeding (a cache)         v
                                                                                            installed | rolled_back
    installed <-> previous | superseded | rolled_back  follow the disk (InstallsChanged); revoked by RolloutChanged.
"""

from __future__ import annotations

from posswarm.lifecycle.choosing import Offer, choose, meant_for, newest_carried, versions_to_keep
from posswarm.lifecycle.effects import (
    AdoptChunks,
    Announce,
    Collect,
    Effect,
    FetchManifest,
    Hold,
    Install,
    Refetch,
    Refuse,
    ResumeTorrent,
    RollBack,
    Stage,
    Swarm,
    Verify,
)
from posswarm.lifecycle.events import (
    ChunksChecked,
    Event,
    InstallDone,
    InstallFailed,
    InstallsChanged,
    LayOutFailed,
    Listed,
    ManifestArrived,
    ManifestBad,
    Resumed,
    RetryDue,
    RolloutChanged,
    ScrubFoundBad,
    TorrentFailed,
    TorrentFinished,
    Unreachable,
)
from posswarm.lifecycle.states import (
    ANNOUNCED_INSTALLED,
    MAX_BAD_CHUNK_ROUNDS,
    READY,
    SCRUBBED,
    Facts,
    Installed,
    NodeFacts,
    Record,
    ReleaseState,
    listed,
)
from posswarm.lifecycle.transitions import step

__all__ = [
    "ANNOUNCED_INSTALLED",
    "AdoptChunks",
    "Announce",
    "ChunksChecked",
    "Collect",
    "Effect",
    "Event",
    "Facts",
    "FetchManifest",
    "Hold",
    "Install",
    "InstallDone",
    "InstallFailed",
    "Installed",
    "InstallsChanged",
    "LayOutFailed",
    "Listed",
    "MAX_BAD_CHUNK_ROUNDS",
    "ManifestArrived",
    "ManifestBad",
    "NodeFacts",
    "Offer",
    "READY",
    "Record",
    "Refetch",
    "Refuse",
    "ReleaseState",
    "ResumeTorrent",
    "Resumed",
    "RetryDue",
    "RollBack",
    "RolloutChanged",
    "SCRUBBED",
    "ScrubFoundBad",
    "Stage",
    "Swarm",
    "TorrentFailed",
    "TorrentFinished",
    "Unreachable",
    "Verify",
    "choose",
    "listed",
    "meant_for",
    "newest_carried",
    "step",
    "versions_to_keep",
]
