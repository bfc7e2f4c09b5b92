"""A store peer that serves corrupt pieces is banned, and the download still completes correctly from the others."""

from __future__ import annotations

import shutil
from pathlib import Path

import libtorrent as lt
import trio

from posswarm.torrent import HashFailed, PeerBanned, SessionConfig, TorrentFinished, TorrentSession

from .test_torrent_session import MiB, make_release, payload

STORE = "127.0.9.0/24"


def _rot(root: Path) -> None:
    """Flip a byte in every piece of every chunk file, in place: same inodes, same sizes, wrong content."""
    for path in (root / "chunks").rglob("*/*"):
        with open(path, "r+b") as f:
            size = path.stat().st_size
            for offset in range(100, size, 256 * 1024):
                f.seek(offset)
                byte = f.read(1)
                f.seek(offset)
                f.write(bytes([byte[0] ^ 0xFF]))


def _liar(root: Path, torrent: bytes, ip: str):
    """The adversary (not code under test): a plain libtorrent session seeding a good copy, which is then
    corrupted on disk; libtorrent trusts its disk once checked and serves the rot."""
    ses = lt.session(lt.session_params({
        "listen_interfaces": f"{ip}:0", "outgoing_interfaces": ip, "enable_dht": False, "enable_lsd": False,
        "enable_upnp": False, "enable_natpmp": False, "enable_outgoing_utp": False, "enable_incoming_utp": False,
        "allow_multiple_connections_per_ip": True,
    }))
    atp = lt.load_torrent_buffer(torrent)
    atp.save_path = str(root)
    atp.flags &= ~(lt.torrent_flags.auto_managed | lt.torrent_flags.paused)
    return ses, ses.add_torrent(atp)


async def test_a_corrupting_peer_is_banned_and_the_install_still_completes(tmp_path):
    torrent, good_root = make_release(tmp_path / "good", [2 * MiB, 3 * MiB, 1 * MiB + 99])
    shutil.copytree(good_root, tmp_path / "bad", ignore=shutil.ignore_patterns(".*"))  # not the honest .resume
    liar, handle = await trio.to_thread.run_sync(_liar, tmp_path / "bad", torrent, "127.0.9.66")
    with trio.fail_after(10):
        while not (liar.listen_port() and handle.status().is_seeding):
            await trio.sleep(0.05)  # the adversary is plain libtorrent: no event to wait on here
    _rot(tmp_path / "bad")
    async with trio.open_nursery() as nursery:
        honest = await nursery.start(TorrentSession(SessionConfig("127.0.9.1", lan_network=STORE)).run)
        await honest.add("r", torrent, good_root)
        till = await nursery.start(TorrentSession(SessionConfig("127.0.9.10", lan_network=STORE, lan_only=True)).run)
        events = till.subscribe()
        # the liar first, alone, so it is the source of the first pieces
        await till.add("r", torrent, tmp_path / "till", peers=[("127.0.9.66", liar.listen_port())])
        seen: list = []
        with trio.fail_after(30):
            async for event in events:
                seen.append(event)
                if isinstance(event, PeerBanned):
                    till.connect_peer(("127.0.9.1", honest.listen_port), "r")
                if isinstance(event, TorrentFinished):
                    break
        assert any(isinstance(e, HashFailed) for e in seen)
        assert [e.ip for e in seen if isinstance(e, PeerBanned)] == ["127.0.9.66"]
        assert payload(tmp_path / "till") == payload(good_root)
        nursery.cancel_scope.cancel()
    await trio.to_thread.run_sync(lambda: liar.pause())
