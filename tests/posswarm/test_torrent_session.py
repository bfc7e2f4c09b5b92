"""Real libtorrent sessions on their own 127.0.x.y addresses, driven by TorrentSession in one trio process."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import libtorrent as lt
import pytest
import trio

from posswarm.errors import PosswarmError
from posswarm.torrent import (
    PeerBlocked,
    SessionConfig,
    TorrentAdded,
    TorrentChecked,
    TorrentError,
    TorrentFinished,
    TorrentSession,
    add_params,
)
from posswarm.torrent.settings import CAPPED_TICK_MS, UNCAPPED_RECEIVE_BUFFER, UNCAPPED_TICK_MS

MiB = 1 << 20
STORE = "127.0.7.0/24"  # the store LAN in these tests; the seeder lives outside it, on 127.0.8.x


def make_release(root: Path, sizes: list[int], *, v2_only: bool = False) -> tuple[bytes, Path]:
    """A release dir root/chunks/<h[:2]>/<h> of random files, and its private hybrid (or v2-only) torrent."""
    chunks = root / "chunks"
    for i, size in enumerate(sizes):
        name = f"{i:02x}{os.urandom(8).hex()}"
        path = chunks / name[:2] / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))
    ct = lt.create_torrent(lt.list_files(str(chunks)), 256 * 1024, lt.create_torrent.v2_only if v2_only else 0)
    ct.set_priv(True)
    lt.set_piece_hashes(ct, str(root), lambda i: None)
    return lt.bencode(ct.generate()), root


def payload(root: Path) -> dict[str, bytes]:
    """The release's files (not the session's own .resume beside them)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.startswith(".")}


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = tmp_path_factory.mktemp("seed") / "release"
    return make_release(root, [3 * MiB, 2 * MiB + 12345, 4 * MiB, 1 * MiB + 7, 2 * MiB])


async def start(nursery, ip: str, **kw) -> TorrentSession:
    return await nursery.start(TorrentSession(SessionConfig(ip, **kw)).run)


async def wait_for(events, kind, key=None, timeout=30.0):
    with trio.fail_after(timeout):
        async for event in events:
            if isinstance(event, kind) and (key is None or getattr(event, "key", None) == key):
                return event
    raise AssertionError(f"event channel closed before {kind.__name__}")


async def test_seeder_and_two_downloaders_finish_with_identical_files_and_count_sources(release, tmp_path):
    torrent, seed_root = release
    size = sum(len(b) for b in payload(seed_root).values())
    async with trio.open_nursery() as nursery:
        seeder = await start(nursery, "127.0.8.1")  # central: no store LAN of its own
        seeder_events = seeder.subscribe()
        await seeder.add("r1", torrent, seed_root)
        await wait_for(seeder_events, TorrentFinished, "r1")  # complete right after its check
        assert seeder.progress("r1").state == "seeding"

        a = await start(nursery, "127.0.7.11", lan_network=STORE)
        b = await start(nursery, "127.0.7.12", lan_network=STORE)
        events = [a.subscribe(), b.subscribe()]
        await a.add("r1", torrent, tmp_path / "a", peers=[("127.0.8.1", seeder.listen_port)])
        await b.add(
            "r1", torrent, tmp_path / "b", peers=[("127.0.8.1", seeder.listen_port), ("127.0.7.11", a.listen_port)]
        )
        for channel in events:
            await wait_for(channel, TorrentFinished, "r1")

        expected = payload(seed_root)
        for node, root in ((a, tmp_path / "a"), (b, tmp_path / "b")):
            assert payload(root) == expected
            p = node.progress("r1")
            assert p.is_finished and p.done_bytes == p.wanted_bytes == size
            assert p.web_bytes == 0
            # every received byte is counted once by source (a few % of end-game duplicates allowed)
            assert size <= p.wan_bytes + p.lan_bytes <= size * 1.05, p
        # The seeder outside the store is WAN, and only it held the release: every byte came over the WAN at least
        # once, to a or to b (which of them took what from the other is the swarm's choice: under load a took
        # all of it from b once, so a's own WAN count can be 0).
        assert a.progress("r1").wan_bytes + b.progress("r1").wan_bytes >= size
        await seeder.refresh()
        sent = seeder.progress("r1")
        assert sent.upload_lan_bytes == 0
        got_wan = a.progress("r1").wan_bytes + b.progress("r1").wan_bytes
        assert size <= sent.upload_bytes and abs(sent.upload_bytes - got_wan) <= 0.05 * got_wan
        nursery.cancel_scope.cancel()


async def test_lan_only_device_refuses_a_wan_seeder_but_takes_it_all_from_the_lan(release, tmp_path):
    torrent, seed_root = release
    size = sum(len(b) for b in payload(seed_root).values())
    async with trio.open_nursery() as nursery:
        wan_seeder = await start(nursery, "127.0.8.2")
        await wan_seeder.add("r1", torrent, seed_root)
        device = await start(nursery, "127.0.7.21", lan_network=STORE, lan_only=True)
        events = device.subscribe()
        await device.add("r1", torrent, tmp_path / "dev", peers=[("127.0.8.2", wan_seeder.listen_port)])
        blocked = await wait_for(events, PeerBlocked)
        assert blocked.ip == "127.0.8.2"
        assert device.progress("r1").done_bytes == 0
        assert device.progress("r1").wan_bytes == 0

        # a copy of the release inside the store (the cache) is allowed
        cache_root = tmp_path / "cache"
        # the release files only: a seeding session writes its .resume beside them at any moment
        shutil.copytree(seed_root, cache_root, ignore=shutil.ignore_patterns(".*"))
        cache = await start(nursery, "127.0.7.1", lan_network=STORE)
        await cache.add("r1", torrent, cache_root)
        device.connect_peer(("127.0.7.1", cache.listen_port), "r1")
        await wait_for(events, TorrentFinished, "r1")
        p = device.progress("r1")
        assert p.done_bytes == size
        assert p.wan_bytes == 0 and size <= p.lan_bytes <= size * 1.05
        assert payload(tmp_path / "dev") == payload(seed_root)
        nursery.cancel_scope.cancel()


async def test_chunks_already_in_place_are_checked_and_not_fetched_again(release, tmp_path):
    torrent, seed_root = release
    files = payload(seed_root)
    held = dict(list(files.items())[:3])  # as if hard-linked from an older release
    missing = sum(len(b) for name, b in files.items() if name not in held)
    node_root = tmp_path / "node"
    for name, data in held.items():
        (node_root / name).parent.mkdir(parents=True, exist_ok=True)
        (node_root / name).write_bytes(data)
    async with trio.open_nursery() as nursery:
        seeder = await start(nursery, "127.0.8.3")
        await seeder.add("r1", torrent, seed_root)
        node = await start(nursery, "127.0.7.31", lan_network=STORE)
        events = node.subscribe()
        await node.add("r1", torrent, node_root)  # no peers yet: let the check finish first
        checked = await wait_for(events, TorrentChecked, "r1")
        assert checked.done_bytes >= sum(len(b) for b in held.values())
        assert node.progress("r1").state == "downloading"

        node.connect_peer(("127.0.8.3", seeder.listen_port))
        await wait_for(events, TorrentFinished, "r1")
        p = node.progress("r1")
        received = p.wan_bytes + p.lan_bytes
        # pieces straddling a held and a missing file may come again; never the held files themselves
        assert missing <= received <= missing + 2 * 256 * 1024, (received, missing)
        assert payload(node_root) == files
        nursery.cancel_scope.cancel()


async def test_adding_the_same_key_twice_is_idempotent_and_garbage_is_refused(release, tmp_path):
    torrent, seed_root = release
    async with trio.open_nursery() as nursery:
        node = await start(nursery, "127.0.7.41")
        events = node.subscribe()
        await node.add("r1", torrent, seed_root)
        await node.add("r1", torrent, seed_root)
        assert node.keys() == ["r1"]
        assert await wait_for(events, TorrentAdded) == TorrentAdded("r1")
        await wait_for(events, TorrentFinished, "r1")
        with pytest.raises(PosswarmError, match="r2: not a valid .torrent"):
            await node.add("r2", b"d4:infod4:name3:abcee", tmp_path)
        with pytest.raises(PosswarmError, match="r3: not a valid .torrent"):
            await node.add("r3", os.urandom(200), tmp_path)
        with pytest.raises(PosswarmError, match="already added as r1"):
            await node.add("r4", torrent, seed_root)
        with pytest.raises(PosswarmError, match="not in this session"):
            node.progress("r2")

        await node.remove("r1")
        assert node.keys() == []
        assert (seed_root / "chunks").is_dir()  # removing never touches files unless asked
        nursery.cancel_scope.cancel()


async def test_remove_with_delete_files_and_a_bad_peer_address_is_dropped(tmp_path):
    torrent, root = make_release(tmp_path / "rel", [300_000, 500_000])
    async with trio.open_nursery() as nursery:
        node = await start(nursery, "127.0.7.51")
        await node.add("r1", torrent, root, peers=[("not-an-ip", 1), ("127.0.0.1", 0)])
        node.connect_peer(("999.1.1.1", 5), "r1")
        await node.remove("r1", delete_files=True)
        assert not any(p.is_file() for p in (root / "chunks").rglob("*"))
        nursery.cancel_scope.cancel()


async def test_a_fixed_port_already_taken_is_an_error_not_a_silent_move(tmp_path):
    async with trio.open_nursery() as nursery:
        first = await start(nursery, "127.0.7.61")
        with pytest.raises(PosswarmError, match="cannot listen"):
            await start(nursery, "127.0.7.61", listen_port=first.listen_port)
        nursery.cancel_scope.cancel()


async def test_a_save_path_that_cannot_be_written_is_a_torrent_error(release, tmp_path):
    torrent, seed_root = release
    blocker = tmp_path / "not-a-dir"
    blocker.write_bytes(b"x")
    async with trio.open_nursery() as nursery:
        seeder = await start(nursery, "127.0.8.7")
        await seeder.add("r1", torrent, seed_root)
        node = await start(nursery, "127.0.7.71")
        events = node.subscribe()
        await node.add("r1", torrent, blocker / "release", peers=[("127.0.8.7", seeder.listen_port)])
        error = await wait_for(events, TorrentError, "r1")
        assert error.reason
        await node.refresh()
        assert node.progress("r1").state == "error" and node.progress("r1").error
        nursery.cancel_scope.cancel()


async def test_wan_upload_limit_holds_for_wan_peers_but_not_for_the_store_lan(tmp_path):
    torrent, root = make_release(tmp_path / "rel", [1 * MiB, 1 * MiB + 500_000])
    size = 2 * MiB + 500_000
    limit = 1_000_000
    elapsed = {}
    async with trio.open_nursery() as nursery:
        # one seeder, limited towards the WAN; .7.x is its LAN here, .9.x is beyond it
        seeder = await start(nursery, "127.0.7.81", lan_network=STORE, upload_limit_wan=limit)
        await seeder.add("r1", torrent, root)
        for name, ip in (("wan", "127.0.9.81"), ("lan", "127.0.7.82")):
            node = await start(nursery, ip)
            events = node.subscribe()
            began = trio.current_time()
            await node.add("r1", torrent, tmp_path / name, peers=[("127.0.7.81", seeder.listen_port)])
            await wait_for(events, TorrentFinished, "r1")
            elapsed[name] = trio.current_time() - began
        nursery.cancel_scope.cancel()
    # libtorrent lets about a second's quota through at once, so allow that much burst
    assert elapsed["wan"] >= (size - limit) / limit * 0.9, elapsed
    assert elapsed["lan"] < elapsed["wan"] / 2, elapsed


async def test_a_wan_download_cap_holds_on_a_real_image_of_small_chunks(tmp_path):
    # A real image's release is ~700 compressed chunks of 4-20 KiB, a few MB in all: short enough that
    # libtorrent's gulps (a whole bandwidth request granted at once) once ran 13-17 % over the cap
    # between the download's 10 % and 90 % marks. Time only lengthens under load, so the bound holds.
    sizes = [4096 + (i * 7919) % 16384 for i in range(700)]
    torrent, root = make_release(tmp_path / "rel", sizes, v2_only=True)  # as publish makes them
    size = sum(sizes)
    cap = 2_000_000
    async with trio.open_nursery() as nursery:
        seeder = await start(nursery, "127.0.8.91")
        await seeder.add("r1", torrent, root)
        cache = await start(nursery, "127.0.7.91", lan_network=STORE, download_limit_wan=cap)
        await cache.add("r1", torrent, tmp_path / "cache", peers=[("127.0.8.91", seeder.listen_port)])
        samples = []  # (time, WAN payload bytes received)
        with trio.fail_after(60):
            while not samples or not cache.progress("r1").is_finished:
                await cache.refresh(["r1"])
                samples.append((trio.current_time(), cache.progress("r1").wan_bytes))
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    received = samples[-1][1]
    # the per-connection tally came out 932 B short of the release once in 10 runs (load average 33)
    assert received >= 0.99 * size, (received, size)
    low = next(s for s in samples if s[1] >= 0.1 * received)
    high = next(s for s in samples if s[1] >= 0.9 * received)
    rate = (high[1] - low[1]) / (high[0] - low[0])
    assert rate <= cap * 1.05, (rate / cap, samples)


async def test_a_finished_release_restarts_from_resume_data_and_a_changed_size_forces_a_check(tmp_path):
    from posswarm.torrent.session import RESUME_FILE

    torrent, root = make_release(tmp_path / "rel", [2 * MiB, 1 * MiB + 5])
    async with trio.open_nursery() as nursery:
        first = await start(nursery, "127.0.7.41")
        events = first.subscribe()
        await first.add("r", torrent, root)
        await wait_for(events, TorrentFinished, "r")
        with trio.fail_after(10):
            while not (root / RESUME_FILE).exists():
                await trio.sleep(0.05)  # written from the save_resume_data alert, right after the finish
        nursery.cancel_scope.cancel()
    chunk = sorted((root / "chunks").rglob("*/*"))[0]
    with open(chunk, "r+b") as f:  # same size, other bytes: resume data cannot tell
        f.write(b"\xff" * 16)
    async with trio.open_nursery() as nursery:
        again = await start(nursery, "127.0.7.42")
        events = again.subscribe()
        await again.add("r", torrent, root)
        checked = await wait_for(events, TorrentChecked, "r")
        assert checked.done_bytes == 3 * MiB + 5  # trusted as complete: hence BLAKE3 before install, and scrubs
        nursery.cancel_scope.cancel()
    with open(chunk, "r+b") as f:
        f.truncate(1000)
    # libtorrent 2.1.1 trusted its resume data even over a truncated file (measured), so the node checks
    # chunk sizes against the manifest before it adds a release and drops the resume data on a mismatch
    (root / RESUME_FILE).unlink()
    async with trio.open_nursery() as nursery:
        third = await start(nursery, "127.0.7.43")
        events = third.subscribe()
        await third.add("r", torrent, root)
        checked = await wait_for(events, TorrentChecked, "r")
        assert checked.done_bytes < 3 * MiB
        nursery.cancel_scope.cancel()


async def test_wan_caps_change_while_running_and_leave_the_lan_alone():
    async with trio.open_nursery() as nursery:
        cache = await start(nursery, "127.0.7.61", lan_network=STORE, download_limit_wan=1_000_000)
        assert await cache.wan_limits() == (1_000_000, 0)
        await cache.set_wan_limits(500_000, 250_000)
        assert await cache.wan_limits() == (500_000, 250_000)
        # a cap is kept by reading slowly, so the socket buffer shrinks with it (and grows when it lifts)
        assert cache._ses.get_settings()["recv_socket_buffer_size"] == 125_000
        assert cache._ses.get_settings()["tick_interval"] == CAPPED_TICK_MS
        await cache.set_wan_limits(0, 0)
        assert await cache.wan_limits() == (0, 0)
        assert cache._ses.get_settings()["recv_socket_buffer_size"] == UNCAPPED_RECEIVE_BUFFER
        assert cache._ses.get_settings()["tick_interval"] == UNCAPPED_TICK_MS
        nursery.cancel_scope.cancel()


def test_only_a_release_the_caller_has_just_verified_is_seeded_without_a_full_check(release, tmp_path):
    torrent, _ = release
    for verified, seed_mode in ((False, False), (True, True)):
        atp = add_params.load("pos-os@1.0", torrent)
        atp.flags |= lt.torrent_flags.seed_mode  # whatever the .torrent or resume data said
        atp = add_params.prepare(atp, tmp_path, "pos-os@1.0", peers=(), web_seeds=(), super_seed=False,
                                 verified=verified)
        assert bool(atp.flags & lt.torrent_flags.seed_mode) is seed_mode
