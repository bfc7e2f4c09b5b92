"""A forged cache advert on the store LAN cannot stop the tills installing: they try every cache they hear of."""

from __future__ import annotations

import trio

from posswarm.discovery import mdns
from posswarm.discovery.records import Advert
from tools.lab import Lab, write_image


async def test_tills_install_past_a_forged_cache_advert_pointing_where_nothing_listens(tmp_path):
    lab = Lab(tmp_path, devices=2)
    image = write_image(tmp_path / "image.bin", 4)
    # An advert with the store's id (it is in every advert, in clear) heard before the real cache's:
    # its catalog port has nothing behind it.
    forged = Advert(f"cache-forged-{lab.store[-4:]}", lab.store, "cache", "cache", f"127.{lab.net}.1.250",
                    bt_port=1, http_port=9)
    async with trio.open_nursery() as nursery:
        send, receive = trio.open_memory_channel(100)
        nursery.start_soon(_drain, receive)
        with trio.fail_after(60):
            await nursery.start(mdns.run, forged, send)
            await lab.start_central(nursery)
            for node in lab.devices + [lab.cache]:  # the tills are up, and have heard the forgery, first
                await lab.start_node(nursery, node)
        await lab.publish(image, "1.0")
        with trio.fail_after(90):
            await lab.wait_installed("pos-image", "1.0")
        for till in lab.devices:
            doc = lab.status_of(till)
            assert doc["catalog"]["url"] == f"https://{lab.cache.address}:{_http_port(lab)}"
        nursery.cancel_scope.cancel()


async def _drain(receive) -> None:
    async for _ in receive:
        pass


def _http_port(lab: Lab) -> int:
    return int(lab.status_of(lab.cache)["http_url"].rsplit(":", 1)[1])
