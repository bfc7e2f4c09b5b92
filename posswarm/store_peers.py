"""The store's peers as mDNS reports them: only this store's, only inside the store LAN (a trio driver)."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from posswarm import logs
from posswarm.discovery import mdns
from posswarm.discovery.records import Advert

log = logs.get("node")



def store_catalog_url(address: str, port: int) -> str:
    """Where a store cache serves its catalog to the store's devices."""
    return f"http://{address}:{port}"

class StorePeers:
    """Follows discovery events; tells the torrent session and store data of each peer, ``on_cache`` of caches.

    An advert is a hint to connect to, never trust: whatever a peer serves is verified on arrival.
    """

    def __init__(self, node_id: str, store: str, lan: ipaddress.IPv4Network, *, connect: Callable[[tuple[str, int]], None],
                 storedata=None, on_cache: Callable[[], None] = lambda: None) -> None:
        self.node_id = node_id
        self.store = store
        self.lan = lan
        self.peers: dict[str, Advert] = {}
        self._connect = connect
        self._storedata = storedata
        self._on_cache = on_cache

    def swarm_addresses(self) -> list[tuple[str, int]]:
        return [(a.address, a.bt_port) for a in self.peers.values()]

    def catalog_urls(self) -> list[str]:
        """Every cache of the store that serves a catalog, in the order they were heard of."""
        return [store_catalog_url(a.address, a.http_port) for a in self.peers.values() if a.role == "cache" and a.http_port]

    async def run(self, events) -> None:
        async for event in events:
            if isinstance(event, mdns.PeerFound):
                self._found(event.advert)
            elif isinstance(event, mdns.PeerLost):
                if self._storedata:
                    self._storedata.peer_lost(event.node_id)
                if self.peers.pop(event.node_id, None):
                    log.info("peer.lost", node=event.node_id)

    def _found(self, advert: Advert) -> None:
        if advert.store != self.store or advert.node_id == self.node_id:
            return
        if ipaddress.IPv4Address(advert.address) not in self.lan:
            log.warning("peer.outside_lan", node=advert.node_id, address=advert.address)
            return
        known = self.peers.get(advert.node_id)
        self.peers[advert.node_id] = advert
        if self._storedata:
            self._storedata.peer_found(advert)
        if known != advert:
            log.info("peer.found", node=advert.node_id, role=advert.role, address=advert.address)
            self._connect((advert.address, advert.bt_port))
            if advert.role == "cache":
                self._on_cache()
