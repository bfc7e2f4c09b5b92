"""/stats aggregation: per release and store, deduplicated across a hybrid torrent's two hashes."""

from tracker import fleet
from tracker.announce import Announce
from tracker.peerstore import MemoryPeerStore
from tracker.stats import summarize

V1, V2, OTHER = b"\x01" * 20, b"\x02" * 20, b"\x03" * 20
_ports = iter(range(7000, 9000))


def ann(node, role, store, info_hash=V1, **kw):
    base = dict(info_hash=info_hash, peer_id=node.encode().ljust(20, b"-")[:20], ip="10.0.0.1",
                port=next(_ports), uploaded=0, downloaded=0, left=0, node=node, role=role, store=store,
                release="pos-os@1", size=1000)
    base.update(kw)
    return Announce(**base)


def make_store():
    store = MemoryPeerStore(peer_ttl=90, retain=10_000)
    store.record(ann("seeder", "seeder", None), now=0)
    store.record(ann("cache-a", "cache", "A", wan=1000, lan=0), now=10)
    store.record(ann("cache-a", "cache", "A", info_hash=V2, wan=1000, lan=0, installed=True), now=20)
    store.record(ann("till-a1", "device", "A", lan=1000, installed=True, device_class="pos"), now=20)
    store.record(ann("till-a2", "device", "A", left=400, lan=600), now=20)
    store.record(ann("till-a3", "device", "A", left=400, lan=600, event="stopped"), now=20)
    store.record(ann("cache-b", "cache", "B", left=300, wan=1400), now=20)
    store.record(ann("till-b1", "device", "B", left=1000), now=20)
    store.record(Announce(info_hash=OTHER, peer_id=b"p" * 20, ip="10.9.9.9", port=1, uploaded=0,
                          downloaded=0, left=5), now=20)
    return store


def test_store_rows_count_devices_and_bytes():
    doc = summarize(make_store().records(), now=30, peer_ttl=90)
    release = doc["releases"]["pos-os@1"]
    assert release["info_hashes"] == [V1.hex(), V2.hex()] and release["size"] == 1000
    a = release["stores"]["A"]
    assert (a["devices_total"], a["devices_installed"], a["devices_downloading"]) == (3, 1, 1)
    assert a["cache"] == {"node": "cache-a", "state": "installed", "wan_bytes": 1000, "stopped": False}
    assert (a["wan_bytes"], a["lan_bytes"], a["wan_amplification"]) == (1000, 2200, 1.0)
    b = release["stores"]["B"]
    assert b["cache"]["state"] == "downloading" and b["wan_amplification"] == 1.4
    assert release["stores"]["-"]["devices_total"] == 0  # the seeder has no store
    assert (release["stores_total"], release["devices_total"], release["wan_bytes"]) == (2, 4, 2400)


def test_node_rows_and_a_hybrid_torrent_counts_each_node_once():
    doc = summarize(make_store().records(), now=30, peer_ttl=90)
    nodes = doc["releases"]["pos-os@1"]["stores"]["A"]["nodes"]
    assert [n["node"] for n in nodes].count("cache-a") == 1
    till = next(n for n in nodes if n["node"] == "till-a1")
    assert till == {"node": "till-a1", "role": "device", "class": "pos", "ip": "10.0.0.1", "port": till["port"],
                    "left": 0, "installed": True, "state": None, "slot": None, "boot": None, "boot_reason": None,
                    "wan": 0, "lan": 1000, "last_seen_s": 10.0,
                    "stopped": False, "live": True, "stalled": False, "central_expires_in_s": None}
    assert next(n for n in nodes if n["node"] == "till-a3")["live"] is False


def test_standard_client_is_keyed_by_info_hash_and_filters_work():
    store = make_store()
    doc = summarize(store.records(), now=30, peer_ttl=90)
    plain = doc["releases"][OTHER.hex()]
    assert plain["size"] is None and plain["stores"]["-"]["wan_amplification"] is None
    assert plain["stores"]["-"]["cache"]["state"] == "absent"
    only_b = summarize(store.records(), now=30, peer_ttl=90, release="pos-os@1", store="B")
    assert list(only_b["releases"]) == ["pos-os@1"] and list(only_b["releases"]["pos-os@1"]["stores"]) == ["B"]


def test_stalled_means_silent_or_no_progress_for_three_intervals():
    store = make_store()
    assert summarize(store.records(), now=30, peer_ttl=90)["releases"]["pos-os@1"]["stores"]["A"]["stragglers"] == []
    for t in (40, 80, 120):  # announces keep coming, but left never moves
        store.record(ann("till-a2", "device", "A", left=400, lan=600), now=t)
    store.record(ann("till-b1", "device", "B", left=900), now=120)  # moved: not stalled
    a = summarize(store.records(), now=125, peer_ttl=90)["releases"]["pos-os@1"]["stores"]["A"]
    # till-a3 stopped mid-download at 20 and has been silent since: a straggler too.
    assert (a["devices_stalled"], a["stragglers"], a["devices_downloading"]) == (2, ["till-a2", "till-a3"], 0)
    assert next(n for n in a["nodes"] if n["node"] == "till-a2")["stalled"] is True
    later = summarize(store.records(), now=300, peer_ttl=90)["releases"]["pos-os@1"]
    assert later["stores"]["B"]["stragglers"] == ["till-b1"]  # silent since 120
    assert later["devices_stalled"] == 3  # till-a2, till-a3 (stopped mid-download), till-b1; till-a1 installed


def test_a_till_waiting_for_its_install_window_is_staged_not_stalled():
    store = MemoryPeerStore(peer_ttl=90, retain=10_000)
    store.record(ann("cache-a", "cache", "A", wan=1000), now=0)
    for t in range(0, 4000, 30):  # hours of announces with nothing left to fetch, waiting for the night's window
        store.record(ann("till-1", "device", "A", state="staged", slot="a", boot="confirmed"), now=t)
        store.record(ann("till-2", "device", "A", state="boot_pending", slot="a", boot="confirmed"), now=t)
    a = summarize(store.records(), now=4000, peer_ttl=90)["releases"]["pos-os@1"]["stores"]["A"]
    assert (a["devices_staged"], a["devices_stalled"], a["devices_installed"]) == (2, 0, 0)
    assert fleet.state_of(a) == "staged"
    till = next(n for n in a["nodes"] if n["node"] == "till-2")
    assert (till["state"], till["slot"], till["boot"]) == ("boot_pending", "a", "confirmed")
    # A staged till that goes quiet is stalled all the same: the window does not excuse silence.
    later = summarize(store.records(), now=4500, peer_ttl=90)["releases"]["pos-os@1"]["stores"]["A"]
    assert later["devices_stalled"] == 2 and fleet.state_of(later) == "stalled"
    # Activated: every till runs it after its trial boot, and the store reads installed.
    for node in ("till-1", "till-2"):
        store.record(ann(node, "device", "A", state="installed", installed=True, slot="b", boot="confirmed"), now=4600)
    done = summarize(store.records(), now=4601, peer_ttl=90)["releases"]["pos-os@1"]["stores"]["A"]
    assert (done["devices_installed"], done["devices_staged"], fleet.state_of(done)) == (2, 0, "installed")
    assert {n["slot"] for n in done["nodes"] if n["role"] == "device"} == {"b"}


def test_versions_installed_per_device_class_and_release_amplification():
    store = make_store()
    store.record(ann("till-a4", "device", "A", release="pos-os@0", installed=True, device_class="kiosk"), now=20)
    doc = summarize(store.records(), now=30, peer_ttl=90)
    assert doc["stores"]["A"]["installed_by_class"] == {"pos": {"pos-os@1": 1}, "kiosk": {"pos-os@0": 1}}
    assert doc["stores"]["B"]["installed_by_class"] == {}
    assert doc["releases"]["pos-os@1"]["wan_amplification"] == 1.2  # 2400 bytes for 2 stores of a 1000-byte image


def test_rollout_progress_is_grouped_by_ring():
    from tracker.announce import Announce
    from tracker.peerstore import MemoryPeerStore
    from tracker.stats import summarize

    store = MemoryPeerStore(peer_ttl=90, retain=3600)
    h = b"r" * 20
    for node, shop, ring, installed in (("c1", "S1", "canary", True), ("t1", "S1", "canary", True),
                                        ("c2", "S2", "wave-1", True), ("t2", "S2", "wave-1", False)):
        role = "cache" if node.startswith("c") else "device"
        store.record(Announce(h, node.encode().ljust(20, b"-"), "10.0.0.1", 6881, 0, 0, 0, store=shop, role=role,
                              node=node, release="pos-os@1", size=100, installed=installed, ring=ring), now=0)
    doc = summarize(store.records(), 1, peer_ttl=90)
    release = doc["releases"]["pos-os@1"]
    assert release["rings"] == {"canary": {"stores": 1, "devices_total": 1, "devices_installed": 1},
                                "wave-1": {"stores": 1, "devices_total": 1, "devices_installed": 0}}
    assert release["stores"]["S2"]["ring"] == "wave-1"


def test_a_store_cut_off_from_central_shows_its_nodes_with_lapsed_state():
    store = MemoryPeerStore(peer_ttl=90, retain=10_000)
    store.record(ann("cache-c", "cache", "C", central_expires=1000), now=10)
    store.record(ann("till-c1", "device", "C", central_expires=20), now=10)  # lapsed at 20
    store.record(ann("till-c2", "device", "C"), now=10)  # an older node that does not say
    c = summarize(store.records(), now=30, peer_ttl=90)["releases"]["pos-os@1"]["stores"]["C"]
    assert c["nodes_central_expired"] == 1
    assert {n["node"]: n["central_expires_in_s"] for n in c["nodes"]} == {"cache-c": 970, "till-c1": -10,
                                                                         "till-c2": None}
