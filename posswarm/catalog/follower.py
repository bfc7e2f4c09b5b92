"""Follow a catalog source (central for a cache, the store's caches for a device) and report it to the keeper.

Each poll refreshes central's signed state (TUF, posswarm/trust/client.py) through the source, reads the
source's unsigned catalog for its seeds and web seeds only, takes newer signed rollouts, asks
posswarm/lifecycle which releases this node should take now, fetches and checks their manifests against
the signed digests, and hands every result to the release keeper. A device tries every catalog source it
knows, the last good one first, and never sticks to one that fails. When no source gives a fresh state,
the node keeps what it has and the life cycle hears that central's state is stale: nothing new starts.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable
from functools import partial

import httpx
import trio

from posswarm import lifecycle, logs
from posswarm.catalog import changes
from posswarm.catalog.client import fetch_catalog, fetch_release
from posswarm.catalog.model import Catalog
from posswarm.catalog.shelf import Shelf
from posswarm.endpoint import parse_endpoint
from posswarm.errors import PosswarmError, Unreachable
from posswarm.release_keeper import ReleaseKeeper
from posswarm.rollout_store import HeldRollouts
from posswarm.trust.client import CentralTrust
from posswarm.trust.state import TrustError

log = logs.get("node")
MAX_BACKOFF = 4  # poll intervals between tries while no catalog source answers
# A source may list a release a moment before it serves its manifest (a seeder offers central's new signed state
# while its own check of the release still runs; a cache relays it before its fetch of the manifest is done): the
# 404 is asked again after 0.1 s, doubling up to the poll interval. Waiting for the next poll cost 0.3-0.7 s per
# hop in posswarm-netsim (48 MiB, load 3-22), where the release's bytes need 2.4 s.
UNREACHABLE_RETRY_S = 0.1


class CatalogFollower:
    """Polls every ``poll_s`` seconds, or at once after ``poll_now()`` (a cache appeared on the LAN)."""

    def __init__(self, keeper: ReleaseKeeper, rollouts: HeldRollouts, shelf: Shelf, trust: CentralTrust, *,
                 sources: Callable[[], list[str]], poll_s: float, verify: ssl.SSLContext | bool = True) -> None:
        self.keeper = keeper
        self.rollouts = rollouts
        self.shelf = shelf
        self.trust = trust
        self._public_key = trust.keyring
        self._sources = sources  # catalog base URLs to try, in order of preference
        self._poll_s = poll_s
        # A cache's: central's CA; a device's: only a certified cache of its store (posswarm/catalog/store_source.py).
        self._verify = verify
        self._poll_now = trio.Event()
        self._unreachable_rounds = 0  # polls in a row in which a listed release's manifest could not be fetched
        self._stale_logged: str | None = None
        self._pending_relay = None  # a cache: the verified state to relay once its rollouts are held
        self.url: str | None = None  # the source the last good catalog came from
        self.last_ok: float | None = None
        self.last_error: str | None = None

    def poll_now(self) -> None:
        self._poll_now.set()

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        # A source that does not answer a connect within 3 s is skipped for the next one (a LAN answers in ms).
        async with httpx.AsyncClient(timeout=httpx.Timeout(15.0, connect=3.0), verify=self._verify) as client:
            task_status.started(self)
            try:
                async with trio.open_nursery() as nursery:
                    # Push, not poll: the source answers a long poll as soon as what it offers changes.
                    nursery.start_soon(partial(changes.watch, client, lambda: self.url, self.poll_now,
                                               retry_s=self._poll_s))
                    await self._follow_forever(client)
            finally:
                self.trust.close()

    async def _follow_forever(self, client: httpx.AsyncClient) -> None:
        failed_polls = 0
        while True:
            found = await self._read_catalog(client)
            failed_polls = 0 if found is not None else failed_polls + 1
            if found is not None:
                await self._follow(client, *found)
            elif self.trust.state is not None:
                # No source gave a fresh state: act on the one verified before, which only holds
                # (revocations still apply) once it is past its expiry and grace.
                await self._follow(client, None, Catalog(self.trust.state.releases))
            self.keeper.follow_installs()  # an operator's `posswarm rollback` shows in the states
            self.keeper.retry_failed()
            # Backoff while no source answers (an offline store): up to 4 polls apart; a cache
            # appearing on the LAN (poll_now) or a change pushed by the source ends the wait at once.
            unreachable = self._unreachable_rounds if found is not None else 0
            with trio.move_on_after(next_poll_s(self._poll_s, failed_polls, unreachable)):
                await self._poll_now.wait()
            self._poll_now = trio.Event()

    def _candidates(self) -> list[str]:
        sources = list(dict.fromkeys(self._sources()))
        if self.url in sources:  # the last good one first; the others stay in play
            sources.remove(self.url)
            sources.insert(0, self.url)
        return sources

    async def _read_catalog(self, client: httpx.AsyncClient) -> tuple[str, Catalog] | None:
        """Central's signed releases via the first source that gives a verified state, with that source's
        (unsigned) seeds and web seeds; None when none does."""
        errors = []
        for url in self._candidates():
            try:
                state = await self.trust.refresh(url)
            except TrustError as exc:
                errors.append(str(exc))
                log.error("central_state.refused", source=url, reason=str(exc)[:300])
                continue
            except Unreachable as exc:
                errors.append(str(exc))
                continue
            for line in state.skipped:
                log.warning("central_state.target_skipped", reason=line)
            try:
                hint = await fetch_catalog(client, url)
            except PosswarmError as exc:  # seeds are a hint: the release list never comes from here
                log.warning("catalog.hint_unreadable", source=url, reason=str(exc)[:300])
                hint = Catalog(())
            self.url, self.last_ok, self.last_error = url, time.time(), None
            if self.keeper.node.is_cache:
                self._pending_relay = state
            return url, Catalog(state.releases, hint.seeds, hint.web_seeds)
        if errors and self.last_error != errors[-1]:
            log.warning("catalog.unreachable", reason=errors[-1], tried=len(errors))
        self.last_error = errors[-1] if errors else None
        return None

    async def _follow(self, client: httpx.AsyncClient, url: str | None, catalog: Catalog) -> None:
        now = time.time()
        fresh = self.trust.fresh(now)
        if url is not None:
            for rollout in await self.rollouts.refresh(client, url, catalog):
                self.shelf.put_rollout(rollout, self.rollouts.get(rollout.name, rollout.version)[1])
            # A cache relays central's metadata to its devices once it holds every rollout it lists: else a
            # device would fetch an older rollout from it and refuse that sequence for a digest mismatch.
            relay = self._pending_relay
            if relay is not None and all(self.rollouts.holds(e) for e in relay.releases):
                self.shelf.tuf = await trio.to_thread.run_sync(self.trust.relay_files)
                self._pending_relay = None
        self.keeper.follow_rollouts()
        why = self.trust.why_not_fresh(now)
        if why is not None and why != self._stale_logged:
            log.warning("central_state.stale", reason=why)
        self._stale_logged = why
        seeds = [s for s in (_seed(text) for text in catalog.seeds) if s is not None]
        self.keeper.refresh_sources(catalog, seeds)
        entries = {(e.name, e.version): e for e in catalog.releases}
        # A release whose signed rollout this node does not hold yet is not taken: without the document the
        # manifest's targets would apply, the widest reach, however central has paused or revoked it.
        offers = [lifecycle.Offer(e.name, e.version, e.targets.stores, e.targets.device_classes)
                  for e in catalog.releases if self.rollouts.holds(e)]
        decisions = {k: d for k in entries if (d := self.keeper.decision(*k)) is not None}
        known = {key: c.record for key, c in self.keeper.releases.items()}
        chosen = lifecycle.choose(offers, known, self.keeper.node, decisions, central_fresh=fresh)
        if url is None:  # no source answered: what is chosen (within the grace) is fetched on a later poll
            return
        unreachable = False
        for offer in chosen:
            entry = entries[(offer.name, offer.version)]
            if not self.keeper.listed(entry.name, entry.version):
                continue
            try:
                fetched = await fetch_release(client, url, entry, self._public_key)
            except Unreachable as exc:
                self.keeper.unreachable(entry.name, entry.version, str(exc))
                log.warning("release.unreachable", release=entry.release_id, reason=str(exc))
                unreachable = True
                continue
            except PosswarmError as exc:
                self.keeper.refused(entry.name, entry.version, str(exc))
                continue
            web = catalog.web_seeds_of(entry) if self.keeper.node.is_cache else []
            self.keeper.arrived(fetched, seeds, web)
        self._unreachable_rounds = self._unreachable_rounds + 1 if unreachable else 0


def next_poll_s(poll_s: float, failed_polls: int, unreachable_rounds: int) -> float:
    """Seconds to the next poll: ``poll_s``, backing off up to MAX_BACKOFF polls while no source answers, and
    0.1 s doubling (never past ``poll_s``) after rounds in which a listed release's manifest was not there yet."""
    wait = poll_s * min(2 ** max(failed_polls - 1, 0), MAX_BACKOFF)
    if unreachable_rounds:
        wait = min(wait, UNREACHABLE_RETRY_S * 2 ** (unreachable_rounds - 1))
    return wait


def _seed(text: str) -> tuple[str, int] | None:
    """A catalog's seed ``ip:port``, or None for one that is not (a peer's garbage is skipped, not fatal)."""
    try:
        return parse_endpoint(text, what="catalog seed", ip_only=True)  # libtorrent connects to addresses
    except PosswarmError:
        return None
