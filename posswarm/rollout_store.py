"""The rollout documents a node holds: the newest verified one per release, kept on disk across restarts."""

from __future__ import annotations

from pathlib import Path

import httpx

from posswarm import logs
from posswarm.catalog.client import get_bounded
from posswarm.catalog.model import Catalog, CatalogEntry
from posswarm.errors import PosswarmError, Unreachable
from posswarm.fsync import replace_synced
from posswarm.rollout import (
    MAX_ROLLOUT_BYTES,
    ROLLOUT_NAME,
    Decision,
    Rollout,
    RolloutError,
    decide,
    newer,
    verify_rollout,
)
from posswarm.trust.state import check_bytes, digest_of

log = logs.get("rollouts")


class HeldRollouts:
    """``DIR/NAME@VERSION.msgpack`` per release; the highest sequence wins, so a replayed older document
    is refused even after a restart. A release without a document follows its signed manifest."""

    def __init__(self, directory: Path, public_key) -> None:
        self.directory = directory
        self.public_key = public_key
        self._held: dict[tuple[str, str], tuple[Rollout, bytes]] = {}
        self._refused: dict[tuple[str, str], int] = {}  # sequences refused, not fetched again

    def load(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for path in sorted(self.directory.glob("*@*.msgpack")):
            name, _, version = path.stem.partition("@")
            try:
                data = path.read_bytes()
                self._held[(name, version)] = (verify_rollout(data, self.public_key, name=name, version=version), data)
            except (OSError, RolloutError) as exc:
                log.warning("rollout.unreadable", file=str(path), reason=str(exc))

    def get(self, name: str, version: str) -> tuple[Rollout, bytes] | None:
        return self._held.get((name, version))

    def items(self):
        return self._held.items()

    async def refresh(self, client: httpx.AsyncClient, base_url: str, catalog: Catalog) -> list[Rollout]:
        """Fetch every document the catalog says is newer than ours; returns those taken."""
        taken = []
        for entry in catalog.releases:
            key = (entry.name, entry.version)
            held = self._held.get(key)
            if entry.rollout_sequence <= (held[0].sequence if held else 0) or self._refused.get(key) == entry.rollout_sequence:
                continue
            url = f"{base_url.rstrip('/')}{entry.path}/{ROLLOUT_NAME}"
            try:
                data = await get_bounded(client, url, MAX_ROLLOUT_BYTES, what=f"release {entry.release_id}: rollout")
                check_bytes(entry, "rollout", entry.rollout, data)  # bound to its manifest in the signed targets
            except Unreachable as exc:  # not a verdict: asked again on the next poll (a revocation must arrive)
                log.warning("rollout.unreachable", release=entry.release_id, reason=str(exc)[:300])
                continue
            except PosswarmError as exc:  # this source served other (or too many) bytes than central listed: ask again
                log.error("rollout.refused", release=entry.release_id, source=base_url,
                          reason=f"{exc}; asked again on the next poll")
                continue
            try:
                candidate = verify_rollout(data, self.public_key, name=entry.name, version=entry.version)
                rollout = newer(held[0] if held else None, candidate)
            except PosswarmError as exc:  # the listed document itself is bad: this sequence is not asked again
                self._refused[key] = entry.rollout_sequence
                log.error("rollout.refused", release=entry.release_id, reason=str(exc).splitlines()[0][:300])
                continue
            if held is not None and rollout is held[0]:
                continue
            try:
                replace_synced(self.directory / f"{entry.name}@{entry.version}.msgpack", data)
            except OSError as exc:  # a full disk: not taken now, asked again on the next poll
                log.error("rollout.unsaved", release=entry.release_id,
                          reason=f"cannot write it ({exc.strerror}); free space on the data disk, the node retries")
                continue
            self._held[key] = (rollout, data)
            log.info("rollout.taken", release=entry.release_id, sequence=rollout.sequence, state=rollout.state,
                     ring=rollout.ring)
            taken.append(rollout)
        return taken

    def holds(self, entry: CatalogEntry) -> bool:
        """Whether the rollout central's signed targets list for ``entry`` is the one held (or there is none)."""
        held = self._held.get((entry.name, entry.version))
        return entry.rollout is None or (held is not None and digest_of(held[1]) == entry.rollout)

    def decision(self, name: str, version: str, *, store: str, device_class: str, role: str) -> Decision | None:
        """What the held document says this node does about the release; None when it has none."""
        held = self._held.get((name, version))
        if held is None:
            return None
        return decide(held[0], store=store, device_class=device_class, role=role)
