"""A tracker's peer store holding a whole chain's rollout: 5,000 stores x 20 tills, recorded as announces would be."""

from __future__ import annotations

from tracker.announce import Announce
from tracker.peerstore import MemoryPeerStore

STORES, TILLS = 5_000, 20
SIZE = 734_003_200  # bytes of pos-os@2026.11 on the wire
RELEASE, HASH = "pos-os@2026.11", b"\x11" * 20
APP, APP_HASH, APP_SIZE, APP_STORES = "store-app@3.2", b"\x22" * 20, 52_428_800, 200


def store_id(i: int) -> str:
    return f"S{i:04d}"


def ring_of(i: int) -> str:
    return "canary" if i < 50 else "wave-1" if i < 1000 else "wave-2"


def cache_absent(i: int) -> bool:
    return i % 97 == 5


def amplified(i: int) -> bool:
    """The cache of these stores pulled the image 2.6 times over the WAN (a flapping link, say)."""
    return i % 331 == 7 and not cache_absent(i)


def stalled(i: int) -> bool:
    """Two tills of these stores stopped announcing, for longer the higher the store number."""
    return i % 401 == 3


def fetching(i: int) -> bool:
    return ring_of(i) == "wave-2" and i % 3 == 0


def stalled_for(i: int) -> float:
    return 400.0 + i


def fill(now: float) -> MemoryPeerStore:
    """Every store's cache and tills as of ``now``; stalled tills last announced ``stalled_for`` seconds before."""
    store = MemoryPeerStore(peer_ttl=90, retain=86_400)
    for i in range(STORES):
        _store(store, i, now)
    return store


def _store(store: MemoryPeerStore, i: int, now: float) -> None:
    sid, ring = store_id(i), ring_of(i)
    octets = f"10.{i // 250}.{i % 250}"
    if not cache_absent(i):
        store.record(_announce(HASH, sid, "cache", "cache", f"{octets}.1", left=0, wan=int(SIZE * (2.6 if amplified(i)
                                                                                                  else 1.0)),
                               lan=0, installed=False, release=RELEASE, size=SIZE, ring=ring), now)
    for j in range(TILLS):
        left, at = 0, now
        if fetching(i) and j >= 10:
            left = SIZE // 2
        if stalled(i) and j < 2:
            left, at = SIZE // 3, now - stalled_for(i)
        store.record(_announce(HASH, sid, "device", f"till-{j:02d}", f"{octets}.{10 + j}", left=left, wan=0,
                               lan=SIZE - left, installed=left == 0, release=RELEASE, size=SIZE, ring=ring), at)
        if i < APP_STORES and j < 5:
            store.record(_announce(APP_HASH, sid, "device", f"till-{j:02d}", f"{octets}.{10 + j}", left=0, wan=0,
                                   lan=APP_SIZE, installed=True, release=APP, size=APP_SIZE, ring="all"), now)
    if i < APP_STORES and not cache_absent(i):
        store.record(_announce(APP_HASH, sid, "cache", "cache", f"{octets}.1", left=0, wan=APP_SIZE, lan=0,
                               installed=False, release=APP, size=APP_SIZE, ring="all"), now)


def _announce(info_hash: bytes, sid: str, role: str, node: str, ip: str, *, left: int, wan: int, lan: int,
              installed: bool, release: str, size: int, ring: str) -> Announce:
    return Announce(info_hash=info_hash, peer_id=f"-PS0100-{sid}{node}".encode()[:20].ljust(20, b"-"), ip=ip,
                    port=6881, uploaded=0, downloaded=SIZE - left, left=left, store=sid, role=role,
                    device_class="pos" if role == "device" else None, node=node, release=release, size=size,
                    wan=wan, lan=lan, installed=installed, ring=ring)
