"""The seeder offers a release's signed state only once it serves the release."""

from __future__ import annotations

import httpx
import trio

from posswarm.keys import load_private_key
from seeder.cli import update_signed_state
from seeder.keys_cli import init_keys
from seeder.publish import publish_release
from seeder.server import Seeder


def _central(tmp_path):
    """A seeder with its keys, and a payload to publish to it."""
    releases = tmp_path / "releases"
    keys = init_keys(tmp_path / "keys", releases)
    payload = tmp_path / "pos.img"
    payload.write_bytes(bytes(range(256)) * 4096)
    seeder = Seeder(releases, http=("127.0.7.1", 0), bt=("127.0.7.1", 0), data_dir=tmp_path / "data",
                    timestamp_key=keys.key("timestamp"))
    return releases, keys, payload, seeder


async def test_a_new_signed_state_is_offered_only_once_its_release_is_served(tmp_path):
    releases, keys, payload, seeder = _central(tmp_path)
    offers: list[bool] = []  # at each change of the offered signed state: was the release listed in it served?

    def offered() -> None:
        targets = seeder.shelf.tuf.get("targets.json", b"")
        if b"pos-os/1.0/" in targets and not offers:
            offers.append(("pos-os", "1.0") in seeder.shelf)

    async with trio.open_nursery() as nursery, httpx.AsyncClient() as client:
        await nursery.start(seeder.run)
        seeder.shelf.on_change(offered)
        targets = load_private_key(keys.key("targets"))
        # no await in between: the seeder's next scan finds the release and its signed state together,
        # as when `posswarm-seeder publish` finishes between two scans
        publish_release(payload, name="pos-os", version="1.0", private_key=targets, out=releases)
        update_signed_state(releases, targets, tmp_path / "keys" / "snapshot.key")
        with trio.fail_after(10):  # the seeder scans every 0.5 s
            while not offers:
                await trio.sleep(0.05)
        assert offers == [True]
        manifest = await client.get(f"{seeder.url}/releases/pos-os/1.0/manifest.msgpack")
        assert manifest.status_code == 200
        nursery.cancel_scope.cancel()


async def test_a_publish_wakes_the_seeder_at_once_not_at_its_next_periodic_scan(tmp_path, monkeypatch):
    """The repository watch (inotify on RELEASES/.tuf) starts the scan: with the periodic scan an hour away, the
    release is served and offered within the deadline all the same."""
    import seeder.server

    monkeypatch.setattr(seeder.server, "SCAN_EVERY_S", 3600.0)
    releases, keys, payload, central = _central(tmp_path)
    served = trio.Event()

    def changed() -> None:
        if ("pos-os", "1.0") in central.shelf and b"pos-os/1.0/" in central.shelf.tuf.get("targets.json", b""):
            served.set()

    async with trio.open_nursery() as nursery:
        await nursery.start(central.run)
        central.shelf.on_change(changed)
        targets = load_private_key(keys.key("targets"))
        await trio.to_thread.run_sync(lambda: publish_release(payload, name="pos-os", version="1.0",
                                                              private_key=targets, out=releases))
        await trio.to_thread.run_sync(update_signed_state, releases, targets, tmp_path / "keys" / "snapshot.key")
        with trio.fail_after(5):
            await served.wait()
        nursery.cancel_scope.cancel()
