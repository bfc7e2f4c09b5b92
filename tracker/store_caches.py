"""Which caches each store has, and where their store catalog listens: for a till that cannot find one itself.

Where a store's network blocks multicast (mDNS) and no ``store.cache_url`` is configured, a freshly
imaged till has no catalog source. The tracker knows the store's caches from their announces
(``catalog=<port>``), and hands a till of that store — and only of that store — their LAN addresses
(``GET /caches/<passkey>``). What it hands out is a hint to connect to, never trust: the till still
verifies central's signed state and the cache's certificate. Pure: the desk feeds it announces and a ``now``.
"""

from __future__ import annotations

from tracker.announce import Announce
from tracker.peerstore import peer_key

PER_STORE = 8  # caches remembered per store (a store has one, two while one is replaced)


class StoreCaches:
    """store -> {record key: (lan address, catalog port, live until)}, at most ``max_stores`` stores."""

    def __init__(self, *, max_stores: int) -> None:
        self.max_stores = max_stores
        self._stores: dict[str, dict[str, tuple[str, int, float]]] = {}

    def note(self, a: Announce, live_until: float, now: float) -> None:
        """Remember (or forget, on ``stopped``) a cache's catalog from its admitted announce."""
        if a.role != "cache" or a.store is None or not a.catalog_port:
            return
        caches = self._stores.get(a.store)
        key = peer_key(a)  # a certified cache's entry is not a passkey announce's to replace
        if a.event == "stopped":
            if caches is not None:
                caches.pop(key, None)
            return
        if caches is None:
            if len(self._stores) >= self.max_stores:
                self.expire(now)
                if len(self._stores) >= self.max_stores:
                    return  # full of live stores: the records' own cap refuses such announces anyway
            caches = self._stores[a.store] = {}
        if key not in caches and len(caches) >= PER_STORE:
            oldest = min(caches, key=lambda k: caches[k][2])
            del caches[oldest]
        caches[key] = (a.lan_ip or a.ip, a.catalog_port, live_until)

    def of(self, store: str, now: float) -> list[tuple[str, int]]:
        """The live caches of ``store``: (address, catalog port), the most recently heard first."""
        live = [(until, ip, port) for ip, port, until in self._stores.get(store, {}).values() if until > now]
        return [(ip, port) for _, ip, port in sorted(live, reverse=True)]

    def expire(self, now: float) -> None:
        for store in list(self._stores):
            caches = {k: v for k, v in self._stores[store].items() if v[2] > now}
            if caches:
                self._stores[store] = caches
            else:
                del self._stores[store]
