"""A node known only from an (unauthenticated) mDNS advert gets nothing until a TLS handshake shows its certificate,
and a till's certificate never makes it the cache, whatever its adverts and heartbeats say."""

from __future__ import annotations

import pytest
import trio

from posswarm.gossip.messages import Heartbeat
from posswarm.storedata.cache import CacheData
from posswarm.storedata.device import DeviceData
from tests.posswarm.gossip.certified import Authority

STORE = "S042"


class FakeNode:
    """A listener an mDNS advert points at that holds no certificate: it records every byte sent to it."""

    def __init__(self) -> None:
        self.received = b""
        self.connections = 0
        self.port = 0

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        await trio.serve_listeners(self._serve, listeners, task_status=task_status)

    async def _serve(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        async with stream:
            try:
                async for data in stream:
                    self.received += data
            except trio.BrokenResourceError:
                pass


@pytest.fixture
def authority(tmp_path):
    return Authority(tmp_path / "enrolment")


async def _until(predicate, timeout: float = 15.0) -> None:
    with trio.fail_after(timeout):
        while not await predicate():
            await trio.sleep(0.05)


async def _device(nursery, tmp_path, authority, node: str) -> DeviceData:
    channel = authority.channel(node)
    await nursery.start(channel.run)
    device = DeviceData(channel, outbox_path=str(tmp_path / f"{node}-outbox.sqlite"),
                        sku_path=str(tmp_path / f"{node}-sku.sqlite"), device_id=node)
    return await nursery.start(device.run)


async def _cache(nursery, tmp_path, authority) -> CacheData:
    channel = authority.channel("cache", "cache")
    await nursery.start(channel.run)
    cache = CacheData(channel, ledger_path=str(tmp_path / "ledger.sqlite"), sku_path=str(tmp_path / "c.sqlite"),
                      store=STORE, central_url="http://127.0.0.1:9", sku_poll_s=5.0)
    return await nursery.start(cache.run)


async def test_a_fake_cache_advert_without_a_certificate_gets_no_frame_at_all(nursery, tmp_path, authority):
    fake = FakeNode()
    await nursery.start(fake.run)
    till = await _device(nursery, tmp_path, authority, "till-1")
    till.channel.add_peer("cache", "127.0.0.1", fake.port)  # what a forged mDNS advert does
    for _ in range(3):
        await till.record([("SKU1", 1, 100)], [("cash", 100)])

    async def tried_twice():  # a second attempt comes only after the first back-off: >= 1 s of chances
        return fake.connections >= 2

    await _until(tried_twice)
    # All it ever saw is the start of TLS handshakes (record type 22), never a frame, let alone a sale.
    assert fake.received and fake.received[0] == 0x16 and b"SKU1" not in fake.received
    assert till.channel.known() == [] and till.channel.alive() == []
    assert (await till.status())["sales"]["unacked"] == 3


async def test_a_forged_advert_cannot_move_a_proven_cache_away(nursery, tmp_path, authority):
    fake = FakeNode()
    await nursery.start(fake.run)
    cache = await _cache(nursery, tmp_path, authority)
    till = await _device(nursery, tmp_path, authority, "till-1")
    till.channel.add_peer("cache", "127.0.0.1", cache.channel.port)

    async def joined():
        return till.channel.alive("cache") == ["cache"]

    await _until(joined)
    till.channel.add_peer("cache", "127.0.0.1", fake.port)  # the real cache's id, the fake's address
    assert till.channel.peers["cache"].port == cache.channel.port, "an unauthenticated advert moved a proven peer"
    till.channel.forget_peer("cache")  # and a forged goodbye
    assert till.channel.alive("cache") == ["cache"], "an unauthenticated goodbye cut off the cache"
    for _ in range(5):
        await till.record([("SKU1", 1, 100)], [("cash", 100)])

    async def all_at_the_real_cache():
        return (await cache.status())["sales"]["stored"] == 5

    await _until(all_at_the_real_cache)
    assert fake.connections == 0


async def test_a_till_claiming_to_be_the_cache_is_not_the_cache(nursery, tmp_path, authority):
    liar = authority.channel("aaa-first-by-name")  # sorts before "cache": the old rule picked it
    await nursery.start(liar.run)
    till = await _device(nursery, tmp_path, authority, "till-1")
    till.channel.add_peer("aaa-first-by-name", "127.0.0.1", liar.port)

    async def met():
        return till.channel.alive() == ["aaa-first-by-name"] and liar.alive() == ["till-1"]

    await _until(met)
    liar._beat = lambda: Heartbeat(liar.node_id, "cache", 1, liar.port)  # every heartbeat now says "cache"

    async def claim_dropped():
        return till.channel.dropped["claim"] >= 2

    await _until(claim_dropped)
    assert till.channel.alive("cache") == [] and till.channel.peers["aaa-first-by-name"].role == "device"
    await till.record([("SKU1", 1, 100)], [("cash", 100)])
    cache = await _cache(nursery, tmp_path, authority)
    till.channel.add_peer("cache", "127.0.0.1", cache.channel.port)

    async def stored_at_the_real_cache():
        return (await cache.status())["sales"]["stored"] == 1

    await _until(stored_at_the_real_cache)
    kinds = set()
    while True:
        try:
            kinds.add(liar.inbox.receive_nowait().message.KIND)
        except trio.WouldBlock:
            break
    assert "sales.push" not in kinds and "sku.digest" not in kinds, f"the till sent the false cache {kinds}"
