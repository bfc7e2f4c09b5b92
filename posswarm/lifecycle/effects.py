"""What the life cycle asks the drivers to do about a release (pure)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FetchManifest:
    """Download the release's manifest and torrent from the catalog source and check them."""


@dataclass(frozen=True)
class Swarm:
    """Lay the release out (link chunks already held) and add its torrent to the session."""


@dataclass(frozen=True)
class Stage:
    """Write the payload into its staging directory or boot slot as its chunks complete (a device that installs
    it as soon as they check out), so the install only finishes it."""


@dataclass(frozen=True)
class Verify:
    """BLAKE3 every chunk of the release; answer with ChunksChecked(ticket)."""

    ticket: int


@dataclass(frozen=True)
class Install:
    """Assemble, check the payload BLAKE3, switch ``current``, run hook and health check; answer InstallDone."""

    ticket: int


@dataclass(frozen=True)
class Refetch:
    """Take the torrent out, delete the bad chunk files (and their store copies), add it back."""


@dataclass(frozen=True)
class ResumeTorrent:
    """Take the torrent out of its error state."""


@dataclass(frozen=True)
class RollBack:
    """Central revoked the running version: switch ``current`` back to ``previous`` and hold it."""


@dataclass(frozen=True)
class Hold:
    """Mark the version held on disk, so no later run installs it."""


@dataclass(frozen=True)
class AdoptChunks:
    """Hard-link the verified chunks into the node's chunk store for later releases to reuse."""


@dataclass(frozen=True)
class Collect:
    """Remove releases and chunks nothing needs any more (see ``versions_to_keep``)."""


@dataclass(frozen=True)
class Refuse:
    """Say the release is refused, and why (logged, shown in status; the release is never fetched)."""

    reason: str


@dataclass(frozen=True)
class Announce:
    """Tell the tracker soon: the release's state changed in a way the stats show."""


Effect = (FetchManifest | Swarm | Stage | Verify | Install | Refetch | ResumeTorrent | RollBack | Hold | AdoptChunks
          | Collect | Refuse | Announce)
