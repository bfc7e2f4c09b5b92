"""Who may use the tracker: open mode takes any torrent; private mode takes published releases and store passkeys."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

from tracker.announce import Announce, BadRequest


class Access:
    """The private-tracker rules, fed the published info-hashes by whoever polls the catalog."""

    def __init__(self, *, open: bool, passkeys: Mapping[str, str] | None = None) -> None:
        self.open = open
        self._store_of = {key: store for store, key in (passkeys or {}).items()}
        self.published: frozenset[bytes] = frozenset()

    def publish(self, info_hashes: Iterable[bytes]) -> None:
        """Replace the set of trackable torrents (a release withdrawn from the catalog stops being tracked)."""
        self.published = frozenset(info_hashes)

    def admit(self, a: Announce, passkey: str | None) -> Announce:
        """``a`` as the tracker should record it, or BadRequest naming why it is refused.

        The passkey names the store; a posswarm node that also says ``store=`` must agree with it,
        and a plain client (no ``store=``) is placed in its passkey's store.
        """
        if self.open:
            return a
        store = self._store(passkey)
        if a.info_hash not in self.published:
            raise BadRequest(f"torrent {a.info_hash.hex()} is not a published release (publish it on the seeder first)")
        if a.store is not None and a.store != store:
            raise BadRequest(f"store {a.store!r} does not match the passkey's store (use {a.store}'s own tracker URL)")
        if a.store is None and a.role != "seeder":
            return dataclasses.replace(a, store=store)
        return a

    def scrapeable(self, info_hashes: list[bytes], passkey: str | None) -> list[bytes] | None:
        """The hashes a scrape may report (None = every tracked torrent); BadRequest for a bad passkey."""
        if self.open:
            return info_hashes or None
        self._store(passkey)
        return [h for h in info_hashes if h in self.published] if info_hashes else sorted(self.published)

    def _store(self, passkey: str | None) -> str:
        if passkey is None:
            raise BadRequest("this tracker is private: announce to /announce/<passkey> (ask central IT for it)")
        store = self._store_of.get(passkey)
        if store is None:
            raise BadRequest("unknown passkey (check the tracker URL in the node's config)")
        return store
