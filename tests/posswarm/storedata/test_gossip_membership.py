"""A node known only from an (unauthenticated) mDNS advert gets nothing but hellos until it proves the store key."""

from __future__ import annotations

import struct

import trio

from posswarm.gossip import frames
from posswarm.gossip.driver import StoreChannel
from posswarm.storedata.cache import CacheData
from posswarm.storedata.device import DeviceData

SECRET = b"store-S042-secret-0123456789abcdef"
STORE = "S042"


class FakeNode:
    """A listener that advertises itself over mDNS but holds no key: it records every frame sent to it."""

    def __init__(self) -> None:
        self.kinds: list[str] = []
        self.port = 0

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        await trio.serve_listeners(self._serve, listeners, task_status=task_status)

    async def _serve(self, stream: trio.SocketStream) -> None:
        buffer = b""
        async with stream:
            async for data in stream:
                buffer += data
                while len(buffer) >= 4 and len(buffer) >= 4 + struct.unpack_from("!I", buffer)[0]:
                    size = struct.unpack_from("!I", buffer)[0]
                    # The test holds the key, so it can say what the node was told; the fake could not.
                    self.kinds.append(frames.decode(buffer[4 : 4 + size], key=SECRET, store=STORE).kind)
                    buffer = buffer[4 + size :]


def _channel(node: str, role: str) -> StoreChannel:
    return StoreChannel(store=STORE, node_id=node, role=role, secret=SECRET, address="127.0.0.1")


async def _until(predicate, timeout: float = 15.0) -> None:
    with trio.fail_after(timeout):
        while not await predicate():
            await trio.sleep(0.05)


async def _device(nursery, tmp_path, node: str) -> DeviceData:
    channel = _channel(node, "device")
    await nursery.start(channel.run)
    device = DeviceData(channel, outbox_path=str(tmp_path / f"{node}-outbox.sqlite"),
                        sku_path=str(tmp_path / f"{node}-sku.sqlite"), device_id=node)
    return await nursery.start(device.run)


async def test_a_fake_cache_advert_gets_no_heartbeats_and_no_sales(nursery, tmp_path):
    fake = FakeNode()
    await nursery.start(fake.run)
    till = await _device(nursery, tmp_path, "till-1")
    till.channel.add_peer("cache", "127.0.0.1", fake.port, "cache")  # what a forged mDNS advert does
    for _ in range(3):
        await till.record([("SKU1", 1, 100)], [("cash", 100)])

    async def hello_backed_off():  # a second hello comes only after the first back-off: >= 1 s of chances
        return fake.kinds.count("hello") >= 2

    await _until(hello_backed_off)
    assert set(fake.kinds) == {"hello"}, f"a node that never proved the store key was sent {fake.kinds}"
    assert till.channel.known() == [] and till.channel.alive() == []


async def test_a_forged_advert_cannot_move_a_proven_cache_away(nursery, tmp_path):
    fake = FakeNode()
    await nursery.start(fake.run)
    cache_channel = _channel("cache", "cache")
    await nursery.start(cache_channel.run)
    cache = CacheData(cache_channel, ledger_path=str(tmp_path / "ledger.sqlite"), sku_path=str(tmp_path / "c.sqlite"),
                      store=STORE, central_url="http://127.0.0.1:9", sku_poll_s=5.0)
    await nursery.start(cache.run)
    till = await _device(nursery, tmp_path, "till-1")
    till.channel.add_peer("cache", "127.0.0.1", cache_channel.port, "cache")

    async def joined():
        return till.channel.alive("cache") == ["cache"]

    await _until(joined)
    till.channel.add_peer("cache", "127.0.0.1", fake.port, "cache")  # the real cache's id, the fake's address
    assert till.channel.peers["cache"].port == cache_channel.port, "an unauthenticated advert moved a proven peer"
    till.channel.forget_peer("cache")  # and a forged goodbye
    assert till.channel.alive("cache") == ["cache"], "an unauthenticated goodbye cut off the cache"
    for _ in range(5):
        await till.record([("SKU1", 1, 100)], [("cash", 100)])

    async def all_at_the_real_cache():
        return (await cache.status())["sales"]["stored"] == 5

    await _until(all_at_the_real_cache)
    assert fake.kinds == []
