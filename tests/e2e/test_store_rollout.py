"""End to end on loopback: real tracker, seeder, cache and devices (processes, libtorrent, zeroconf, SQLite-free)."""

from __future__ import annotations

import trio

from tools.lab import Lab, change_image, write_image

NAME = "pos-image"


async def test_store_installs_image_from_lan_and_update_moves_only_changed_chunks(tmp_path):
    lab = Lab(tmp_path, devices=3)
    image = write_image(tmp_path / "image-1.bin", 24, seed=1)
    size = image.stat().st_size
    async with trio.open_nursery() as nursery:
        with trio.fail_after(60):
            await lab.start_central(nursery)
            for node in lab.nodes:
                await lab.start_node(nursery, node)
        await lab.publish(image, "1.0", name=NAME)
        with trio.fail_after(120):
            await lab.wait_installed(NAME, "1.0")

        for device in lab.devices:
            r = lab.release_of(device, NAME, "1.0")
            assert r["state"] == "installed"
            assert r["bytes_from_wan"] == 0, f"{device.name} took bytes from outside the store"
            assert r["bytes_from_lan"] >= size * 0.9
            current = device.data_dir / "installed" / NAME / "current"
            assert current.resolve().name == "1.0"
            assert (current / "image.bin").read_bytes() == image.read_bytes()
        cache = lab.release_of(lab.cache, NAME, "1.0")
        assert size <= cache["bytes_from_wan"] <= size * 1.05

        changed = change_image(image, tmp_path / "image-1.bin.next", percent=5)
        update = tmp_path / "v2" / "image-1.bin"
        update.parent.mkdir()
        (tmp_path / "image-1.bin.next").rename(update)
        await lab.publish(update, "1.1", name=NAME)
        with trio.fail_after(120):
            await lab.wait_installed(NAME, "1.1")

        cache2 = lab.release_of(lab.cache, NAME, "1.1")
        assert cache2["reused_bytes"] >= size * 0.6, "unchanged chunks were not reused from 1.0"
        assert cache2["bytes_from_wan"] <= max(changed * 4, 8 << 20) < size
        for device in lab.devices:
            r = lab.release_of(device, NAME, "1.1")
            assert r["bytes_from_wan"] == 0
            assert r["reused_bytes"] >= size * 0.6
            root = device.data_dir / "installed" / NAME
            assert (root / "current").resolve().name == "1.1"
            assert (root / "previous").resolve().name == "1.0"
            assert (root / "current" / "image.bin").read_bytes() == update.read_bytes()
        nursery.cancel_scope.cancel()


async def test_where_multicast_is_forbidden_a_till_finds_its_cache_through_the_tracker(tmp_path):
    lab = Lab(tmp_path, devices=2)
    no_mdns = {"store": {"mdns": False}}  # no adverts, no listening: as on a network that drops multicast
    async with trio.open_nursery() as nursery:
        with trio.fail_after(60):
            await lab.start_central(nursery)
            for node in lab.nodes:
                await lab.start_node(nursery, node, extra=no_mdns)
        await lab.publish(write_image(tmp_path / "image.bin", 4, seed=3), "1.0", name=NAME)
        with trio.fail_after(90):
            await lab.wait_installed(NAME, "1.0")
        cache_catalog = lab.status_of(lab.cache)["http_url"]
        for device in lab.devices:
            status = lab.status_of(device)
            assert status["catalog"]["url"] == cache_catalog, status["catalog"]
            assert lab.release_of(device, NAME, "1.0")["bytes_from_wan"] == 0
        assert "tracker_caches.found" in (lab.logs / f"{lab.devices[0].name}.log").read_text()
        nursery.cancel_scope.cancel()


async def test_a_release_is_pushed_to_the_store_not_waited_for_until_the_next_poll(tmp_path):
    lab = Lab(tmp_path, devices=2, catalog_poll_s=120.0)  # a poll would come far later than the deadline below
    async with trio.open_nursery() as nursery:
        with trio.fail_after(60):
            await lab.start_central(nursery)
            for node in lab.nodes:
                await lab.start_node(nursery, node)
            while not all(((lab.status_of(n) or {}).get("catalog") or {}).get("url") for n in lab.nodes):
                await trio.sleep(0.2)  # every node read its source once (at start, or when it found its cache)
        published = trio.current_time()
        await lab.publish(write_image(tmp_path / "image.bin", 2, seed=5), "1.0", name=NAME)
        with trio.fail_after(45):
            await lab.wait_installed(NAME, "1.0")
        print(f"installed on every node {trio.current_time() - published:.1f} s after publish")
        nursery.cancel_scope.cancel()
