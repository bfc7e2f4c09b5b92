"""Follow a catalog source (central for a cache, the store's caches for a device) and report it to the keeper.

Each poll reads the catalog, takes newer signed rollouts, asks posswarm/lifecycle.py which releases this
node should take now, fetches and checks their manifests, and hands every result to the release keeper.
A device tries every catalog source it knows, the last good one first, and never sticks to one that fails.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import trio

from posswarm import lifecycle, logs
from posswarm.catalog.client import fetch_catalog, fetch_release
from posswarm.catalog.model import Catalog
from posswarm.catalog.shelf import Shelf
from posswarm.endpoint import parse_endpoint
from posswarm.errors import PosswarmError, Unreachable
from posswarm.release_keeper import ReleaseKeeper
from posswarm.rollout_store import HeldRollouts

log = logs.get("node")


class CatalogFollower:
    """Polls every ``poll_s`` seconds, or at once after ``poll_now()`` (a cache appeared on the LAN)."""

    def __init__(self, keeper: ReleaseKeeper, rollouts: HeldRollouts, shelf: Shelf, public_key, *,
                 sources: Callable[[], list[str]], poll_s: float) -> None:
        self.keeper = keeper
        self.rollouts = rollouts
        self.shelf = shelf
        self._public_key = public_key
        self._sources = sources  # catalog base URLs to try, in order of preference
        self._poll_s = poll_s
        self._poll_now = trio.Event()
        self.url: str | None = None  # the source the last good catalog came from
        self.last_ok: float | None = None
        self.last_error: str | None = None

    def poll_now(self) -> None:
        self._poll_now.set()

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        # A source that does not answer a connect within 3 s is skipped for the next one (a LAN answers in ms).
        async with httpx.AsyncClient(timeout=httpx.Timeout(15.0, connect=3.0)) as client:
            task_status.started(self)
            while True:
                found = await self._read_catalog(client)
                if found is not None:
                    await self._follow(client, *found)
                self.keeper.follow_installs()  # an operator's `posswarm rollback` shows in the states
                self.keeper.retry_failed()
                with trio.move_on_after(self._poll_s):
                    await self._poll_now.wait()
                self._poll_now = trio.Event()

    def _candidates(self) -> list[str]:
        sources = list(dict.fromkeys(self._sources()))
        if self.url in sources:  # the last good one first; the others stay in play
            sources.remove(self.url)
            sources.insert(0, self.url)
        return sources

    async def _read_catalog(self, client: httpx.AsyncClient) -> tuple[str, Catalog] | None:
        errors = []
        for url in self._candidates():
            try:
                catalog = await fetch_catalog(client, url)
            except PosswarmError as exc:
                errors.append(str(exc))
                continue
            self.url, self.last_ok, self.last_error = url, time.time(), None
            return url, catalog
        if errors and self.last_error != errors[-1]:
            log.warning("catalog.unreachable", reason=errors[-1], tried=len(errors))
        self.last_error = errors[-1] if errors else None
        return None

    async def _follow(self, client: httpx.AsyncClient, url: str, catalog: Catalog) -> None:
        for rollout in await self.rollouts.refresh(client, url, catalog):
            self.shelf.put_rollout(rollout, self.rollouts.get(rollout.name, rollout.version)[1])
        self.keeper.follow_rollouts()
        seeds = [s for s in (_seed(text) for text in catalog.seeds) if s is not None]
        self.keeper.refresh_sources(catalog, seeds)
        entries = {(e.name, e.version): e for e in catalog.releases}
        offers = [lifecycle.Offer(e.name, e.version, e.targets.stores, e.targets.device_classes)
                  for e in catalog.releases]
        decisions = {k: d for k in entries if (d := self.keeper.decision(*k)) is not None}
        known = {key: c.record for key, c in self.keeper.releases.items()}
        for offer in lifecycle.choose(offers, known, self.keeper.node, decisions):
            entry = entries[(offer.name, offer.version)]
            if not self.keeper.listed(entry.name, entry.version):
                continue
            try:
                fetched = await fetch_release(client, url, entry, self._public_key)
            except Unreachable as exc:
                self.keeper.unreachable(entry.name, entry.version, str(exc))
                log.warning("release.unreachable", release=entry.release_id, reason=str(exc))
                continue
            except PosswarmError as exc:
                self.keeper.refused(entry.name, entry.version, str(exc))
                continue
            web = catalog.web_seeds_of(entry) if self.keeper.node.is_cache else []
            self.keeper.arrived(fetched, seeds, web)


def _seed(text: str) -> tuple[str, int] | None:
    """A catalog's seed ``ip:port``, or None for one that is not (a peer's garbage is skipped, not fatal)."""
    try:
        return parse_endpoint(text, what="catalog seed", ip_only=True)  # libtorrent connects to addresses
    except PosswarmError:
        return None
