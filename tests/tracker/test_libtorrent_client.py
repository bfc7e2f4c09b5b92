"""A real libtorrent client announces a hybrid torrent to the running tracker, then stops."""

import httpx
import libtorrent as lt
import trio

from tracker import server
from tracker.config import TrackerConfig
from tracker.peerstore import MemoryPeerStore


class SignallingStore(MemoryPeerStore):
    """The real store, plus an event per recorded announce so the test waits without sleeping."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.seen: set[tuple[bytes, str]] = set()  # (info_hash, event)
        self.changed = trio.Event()

    def record(self, announce, now):
        super().record(announce, now)
        self.seen.add((announce.info_hash, announce.event))
        self.changed.set()

    async def wait_for(self, wanted: set[tuple[bytes, str]]) -> None:
        while not wanted <= self.seen:
            self.changed = trio.Event()
            await self.changed.wait()


async def stats_of(url):
    async with httpx.AsyncClient(base_url=url) as client:
        return (await client.get("/stats")).json()["releases"]["pos-os@1"]


async def test_libtorrent_hybrid_announce_is_understood(nursery, tmp_path):
    store = SignallingStore(peer_ttl=90, retain=1000)
    config = TrackerConfig(port=0, open=True, open_stats=True, stats_every=0.01)
    url = await nursery.start(lambda task_status: server.run(config, store=store, task_status=task_status))
    payload = tmp_path / "image.bin"
    payload.write_bytes(bytes(range(256)) * 4096)
    ct = lt.create_torrent(lt.list_files(str(payload)), 0, 0)  # flags 0 = hybrid v1+v2
    lt.set_piece_hashes(ct, str(tmp_path), lambda i: None)
    atp = lt.load_torrent_buffer(lt.bencode(ct.generate()))
    atp.save_path = str(tmp_path)
    atp.flags |= lt.torrent_flags.seed_mode
    # posswarm keys ride in the tracker URL; libtorrent appends its own with '&'.
    atp.trackers = [f"{url}/announce?store=A&role=device&node=till-lt&release=pos-os@1&class=pos"]
    ses = lt.session(lt.session_params({"listen_interfaces": "127.0.0.1:0", "enable_dht": False,
                                        "enable_lsd": False, "enable_upnp": False, "enable_natpmp": False}))
    hashes = atp.ti.info_hashes()
    # libtorrent announces a hybrid torrent under both hashes; v2 is truncated to 20 bytes (BEP 52).
    both = {hashes.v1.to_bytes(), hashes.v2.to_bytes()[:20]}
    try:
        handle = ses.add_torrent(atp)
        with trio.fail_after(20):
            await store.wait_for({(h, "started") for h in both})
        release = await stats_of(url)
        assert release["info_hashes"] == sorted(h.hex() for h in both)
        (node,) = release["stores"]["A"]["nodes"]
        assert (node["node"], node["role"], node["class"], node["left"], node["ip"], node["live"]) == (
            "till-lt", "device", "pos", 0, "127.0.0.1", True)

        ses.remove_torrent(handle)
        with trio.fail_after(20):
            await store.wait_for({(h, "stopped") for h in both})
        assert store.swarm(hashes.v1.to_bytes(), trio.current_time()) == []
        (node,) = (await stats_of(url))["stores"]["A"]["nodes"]
        assert node["stopped"] is True and node["live"] is False
    finally:
        box = [ses]  # drop the session off the trio thread: its destructor may block
        del ses
        await trio.to_thread.run_sync(box.clear)
