"""Per-release, per-store progress and WAN/LAN byte totals from the retained announces (schema: docs/tracker-stats.md)."""

from __future__ import annotations

from collections.abc import Iterable

from tracker.peerstore import Peer, live

NO_STORE = "-"  # the store key of nodes that sent no store: central seeders, standard clients


def summarize(
    records: Iterable[Peer],
    now: float,
    *,
    peer_ttl: float,
    stall_after: float | None = None,
    release: str | None = None,
    store: str | None = None,
) -> dict:
    """The /stats document; ``release``/``store`` keep only that release or store.

    A device is stalled when it has not installed and its last announce, or its last change of
    ``left``, is older than ``stall_after`` (default ``peer_ttl``: three announce intervals).
    """
    stall_after = peer_ttl if stall_after is None else stall_after
    if store is not None:  # a store page reads 21 of 100,000 records: pick them before the per-node pass
        records = [p for p in records if (p.store if p.store is not None else NO_STORE) == store]
    latest = _latest_per_node(records)
    releases: dict[str, dict] = {}
    for (release_key, _store, _node), (peer, hashes) in sorted(latest.items()):
        a = peer.announce
        store_key = a.store if a.store is not None else NO_STORE
        if (release is not None and release_key != release) or (store is not None and store_key != store):
            continue
        r = releases.setdefault(release_key, {"info_hashes": set(), "size": None, "stores": {}})
        r["info_hashes"] |= hashes
        if a.size is not None:
            r["size"] = max(r["size"] or 0, a.size)
        r["stores"].setdefault(store_key, []).append(peer)
    return {
        "releases": {key: _release(r, now, peer_ttl, stall_after) for key, r in releases.items()},
        "stores": _versions_by_class(latest, store),
    }


def _versions_by_class(latest: dict[tuple[str, str, str], tuple[Peer, set[str]]], only_store: str | None) -> dict:
    # Per store, which releases its devices run, per device class: what a rollout dashboard
    # needs to see a store half on the old image.
    stores: dict[str, dict] = {}
    for (release_key, _store, _node), (peer, _hashes) in sorted(latest.items()):
        a = peer.announce
        if a.role != "device" or a.store is None or (only_store is not None and a.store != only_store):
            continue
        row = stores.setdefault(a.store, {"installed_by_class": {}})
        if a.installed:
            by_release = row["installed_by_class"].setdefault(a.device_class or "-", {})
            by_release[release_key] = by_release.get(release_key, 0) + 1
    return stores


def _latest_per_node(records: Iterable[Peer]) -> dict[tuple[str, str, str], tuple[Peer, set[str]]]:
    # A hybrid v1+v2 torrent is announced once per info-hash; counting both would double
    # every node, so keep each node's newest record per release and remember both hashes.
    # Per store too: a node id is only unique within its store (and another store may reuse it).
    latest: dict[tuple[str, str, str], tuple[Peer, set[str]]] = {}
    for peer in records:
        a = peer.announce
        key = (a.release if a.release is not None else a.info_hash.hex(), a.store or NO_STORE, a.node_key)
        seen = latest.get(key)
        hashes = (seen[1] if seen else set()) | {a.info_hash.hex()}
        newest = peer if seen is None or peer.last_seen >= seen[0].last_seen else seen[0]
        latest[key] = (newest, hashes)
    return latest


def _release(r: dict, now: float, peer_ttl: float, stall_after: float) -> dict:
    stores = {key: _store(peers, r["size"], now, peer_ttl, stall_after) for key, peers in sorted(r["stores"].items())}
    # Central seeders may announce a store of their own; only stores with tills or a cache count.
    in_stores = [s for key, s in stores.items() if key != NO_STORE and (s["devices_total"] or s["cache"]["node"])]
    wan = sum(s["wan_bytes"] for s in in_stores)
    return {
        "info_hashes": sorted(r["info_hashes"]),
        "size": r["size"],
        "stores_total": len(in_stores),
        "devices_total": sum(s["devices_total"] for s in in_stores),
        "devices_installed": sum(s["devices_installed"] for s in in_stores),
        "devices_staged": sum(s["devices_staged"] for s in in_stores),
        "devices_downloading": sum(s["devices_downloading"] for s in in_stores),
        "devices_stalled": sum(s["devices_stalled"] for s in in_stores),
        "wan_bytes": wan,
        "lan_bytes": sum(s["lan_bytes"] for s in in_stores),
        # 1.0 = every store's cache fetched the image over the WAN exactly once.
        "wan_amplification": round(wan / (r["size"] * len(in_stores)), 4) if r["size"] and in_stores else None,
        "rings": _by_ring(in_stores),
        "stores": stores,
    }


def _by_ring(stores: list[dict]) -> dict:
    """Rollout progress per ring: the ring each store's nodes announce the release at (signed central state)."""
    rings: dict[str, dict] = {}
    for s in stores:
        ring = rings.setdefault(s["ring"] or "-", {"stores": 0, "devices_total": 0, "devices_installed": 0})
        ring["stores"] += 1
        ring["devices_total"] += s["devices_total"]
        ring["devices_installed"] += s["devices_installed"]
    return rings


def _store(peers: list[Peer], size: int | None, now: float, peer_ttl: float, stall_after: float) -> dict:
    devices = [p for p in peers if p.announce.role == "device"]
    stalled = [p for p in devices if _stalled(p, now, stall_after)]
    caches = sorted((p for p in peers if p.announce.role == "cache"), key=lambda p: p.last_seen)
    wan = sum(p.announce.wan or 0 for p in peers)
    rings = [p.announce.ring for p in sorted(peers, key=lambda p: p.last_seen) if p.announce.ring]
    return {
        "ring": rings[-1] if rings else None,
        "devices_total": len(devices),
        "devices_installed": sum(1 for d in devices if d.announce.installed),
        # Holding the release, checked, and waiting for the store's install window (or armed for a trial boot).
        "devices_staged": sum(1 for d in devices if _waiting(d)),
        "devices_downloading": sum(1 for p in devices if _downloading(p) and p not in stalled),
        "devices_stalled": len(stalled),
        "stragglers": [p.announce.node_key for p in stalled],
        # How long the longest-stalled device has made no progress: the dashboard puts these stores first.
        "stalled_s": round(max((now - min(p.last_seen, p.progressed_at) for p in stalled), default=0.0), 1),
        "cache": _cache(caches[-1]) if caches else {"node": None, "state": "absent", "wan_bytes": 0},
        "wan_bytes": wan,
        "lan_bytes": sum(p.announce.lan or 0 for p in peers),
        "size": size,
        "wan_amplification": round(wan / size, 4) if size else None,
        # Since the store's newest announce: a store whose every node went quiet is offline (or cut off).
        "last_seen_s": round(now - max(p.last_seen for p in peers), 1),
        # Nodes whose verified central state has lapsed (offline, or cut off from central): they install nothing new.
        "nodes_central_expired": sum(1 for p in peers if _central_expired(p, now)),
        "nodes": [_node(p, now, peer_ttl, stall_after) for p in peers],
    }


def _central_expired(peer: Peer, now: float) -> bool:
    expires = peer.announce.central_expires
    return expires is not None and expires < now  # 0: the node never verified central's state at all


def _downloading(peer: Peer) -> bool:
    return not peer.stopped and not peer.announce.installed and peer.announce.left > 0


# A till in these states has the whole release and waits on purpose: for its install window, or for the reboot
# into the slot it armed. Hours without progress are then the plan, not a stall.
WAITING = frozenset({"staged", "boot_pending"})


def _waiting(peer: Peer) -> bool:
    return not peer.announce.installed and peer.announce.state in WAITING


def _stalled(peer: Peer, now: float, stall_after: float) -> bool:
    if peer.announce.installed:
        return False
    if _waiting(peer):  # waiting is fine while it keeps announcing; a till gone quiet is stalled all the same
        return now - peer.last_seen > stall_after
    return now - peer.last_seen > stall_after or now - peer.progressed_at > stall_after


def _cache(peer: Peer) -> dict:
    a = peer.announce
    state = "installed" if a.installed else "seeding" if a.left == 0 else "downloading"
    return {"node": a.node_key, "state": state, "wan_bytes": a.wan or 0, "stopped": peer.stopped}


def _node(peer: Peer, now: float, peer_ttl: float, stall_after: float) -> dict:
    a = peer.announce
    return {
        "node": a.node_key,
        "role": a.role,
        "class": a.device_class,
        "ip": a.ip,
        "port": a.port,
        "left": a.left,
        "installed": a.installed,
        "state": a.state,
        # A till with boot slots: the slot it booted, the verdict on that boot, and why (None: no slots).
        "slot": a.slot,
        "boot": a.boot,
        "boot_reason": a.boot_reason,
        "wan": a.wan or 0,
        "lan": a.lan or 0,
        "last_seen_s": round(now - peer.last_seen, 1),
        "stopped": peer.stopped,
        "live": live(peer, now),
        "stalled": peer.announce.role == "device" and _stalled(peer, now, stall_after),
        # Seconds until the node's verified central state expires, as it last said (negative: past; None: not sent).
        "central_expires_in_s": None if a.central_expires is None else round(a.central_expires - now),
    }
