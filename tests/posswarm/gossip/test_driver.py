"""The gossip driver over real loopback TCP: delivery, heartbeats, hostile input dropped and counted."""

from __future__ import annotations

import struct

import trio

from posswarm.gossip import frames
from posswarm.gossip.driver import StoreChannel
from posswarm.gossip.faults import Faults
from posswarm.gossip.messages import SalesAck, SkuRequest

SECRET = b"store-S042-secret-0123456789abcdef"


def _channel(node: str, role: str = "device", secret: bytes = SECRET, store: str = "S042", **kw) -> StoreChannel:
    return StoreChannel(store=store, node_id=node, role=role, secret=secret, address="127.0.0.1", **kw)


async def _until(predicate, timeout: float = 10.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.02)


async def _joined(till: StoreChannel, cache: StoreChannel) -> None:
    """``till`` learns ``cache`` as mDNS would; both prove themselves with the store key."""
    till.add_peer(cache.node_id, "127.0.0.1", cache.port, cache.role)
    await _until(lambda: till.alive() == [cache.node_id] and cache.alive() == [till.node_id])


async def test_messages_flow_and_heartbeats_teach_the_way_back(nursery):
    cache, till = _channel("cache", "cache"), _channel("till-1")
    await nursery.start(cache.run)
    await nursery.start(till.run)
    till.add_peer("cache", "127.0.0.1", cache.port, "cache")  # as mDNS would; the cache learns the till by its hello
    assert not till.send("cache", SkuRequest((1, 2, 3))), "nothing but a hello before the cache proved itself"
    await _until(lambda: till.alive("cache") == ["cache"])
    assert till.send("cache", SkuRequest((1, 2, 3)))
    with trio.fail_after(5):
        got = await cache.inbox.receive()
    assert got.node == "till-1" and got.message == SkuRequest((1, 2, 3))
    await _until(lambda: cache.alive("device") == ["till-1"] and till.alive("cache") == ["cache"])
    assert cache.send("till-1", SalesAck("till-1", "ab" * 8, 5))
    with trio.fail_after(5):
        back = await till.inbox.receive()
    assert back == type(back)("cache", SalesAck("till-1", "ab" * 8, 5))


async def test_foreign_forged_oversized_and_garbage_frames_are_counted_not_fatal(nursery):
    cache = _channel("cache", "cache")
    await nursery.start(cache.run)
    good = frames.encode(SkuRequest((7,)), key=SECRET, store="S042", sender="till-2/b1", counter=1)
    bad = [
        frames.encode(SkuRequest((7,)), key=SECRET, store="S999", sender="x/b", counter=1),  # another store
        frames.encode(SkuRequest((7,)), key=b"another-secret-0123456789", store="S042", sender="x/b", counter=1),
        b"\x93garbage-not-a-frame-at-all",
        good,  # replayed below
    ]
    stream = await trio.open_tcp_stream("127.0.0.1", cache.port)
    payload = b"".join(struct.pack("!I", len(f)) + f for f in [good, *bad])
    await stream.send_all(payload)
    with trio.fail_after(5):
        got = await cache.inbox.receive()
    assert got.message == SkuRequest((7,))
    await _until(lambda: sum(cache.dropped.values()) >= 4)
    assert cache.dropped["wrong_store"] == 1 and cache.dropped["replay"] == 1
    # Garbage is never parsed: without a valid tag it is a bad tag like the forgery, not "malformed".
    assert cache.dropped["bad_tag"] == 2 and cache.dropped["malformed"] == 0
    await stream.send_all(struct.pack("!I", frames.MAX_FRAME + 1))  # a length we refuse to buffer: hang up
    await _until(lambda: cache.dropped["oversized"] == 1)
    with trio.fail_after(5):
        assert await stream.receive_some(10) == b""  # the cache closed the connection
    # ... and still serves honest peers.
    till = _channel("till-3")
    await nursery.start(till.run)
    await _joined(till, cache)
    till.send("cache", SkuRequest((9,)))
    with trio.fail_after(5):
        assert (await cache.inbox.receive()).message == SkuRequest((9,))


async def test_injected_faults_drop_and_duplicate(nursery):
    cache = _channel("cache", "cache")
    till = _channel("till-1", faults=Faults(drop=0.3, dup=0.5, reorder=0.3), seed=7)
    await nursery.start(cache.run)
    await nursery.start(till.run)
    await _joined(till, cache)
    for i in range(200):
        till.send("cache", SkuRequest((i,)))
        await trio.sleep(0)
    seen: list[int] = []
    with trio.move_on_after(1.5):
        async for received in cache.inbox:
            seen.append(received.message.buckets[0])
    assert till.dropped["injected_drop"] > 20
    assert len(set(seen)) < 200, "some frames were dropped"
    assert len(seen) > len(set(seen)), "some were duplicated with a fresh counter and got through"
    assert cache.dropped["replay"] > 0, "byte-identical duplicates were caught by the replay window"
    assert seen != sorted(seen), "some were reordered"


async def test_unreachable_peer_is_counted_and_send_never_blocks(nursery):
    cache, till = _channel("cache", "cache"), _channel("till-1")
    cache_scope = trio.CancelScope()
    nursery.start_soon(_run_in, cache_scope, cache)
    await _until(lambda: cache.port != 0)
    await nursery.start(till.run)
    await _joined(till, cache)
    cache_scope.cancel()  # the cache goes away; the till still knows it as proven
    await _until(lambda: till.alive() == [])
    for _ in range(1000):
        till.send("cache", SkuRequest((1,)))
    await _until(lambda: till.dropped["unreachable"] + till.dropped["queue_full"] >= 1000)
    assert till.alive() == [] and till.known() == ["cache"]


async def _run_in(scope: trio.CancelScope, channel: StoreChannel) -> None:
    with scope:
        await channel.run()


async def test_reorder_alone_loses_nothing(nursery):
    cache = _channel("cache", "cache")
    till = _channel("till-1", faults=Faults(reorder=0.4), seed=3)
    await nursery.start(cache.run)
    await nursery.start(till.run)
    await _joined(till, cache)
    for i in range(100):
        till.send("cache", SkuRequest((i,)))
    seen: list[int] = []
    with trio.fail_after(10):
        while len(seen) < 100:
            seen.append((await cache.inbox.receive()).message.buckets[0])
    assert sorted(seen) == list(range(100)) and seen != list(range(100))


async def test_random_bytes_on_the_socket_never_hurt_the_node(nursery):
    import random

    cache = _channel("cache", "cache")
    await nursery.start(cache.run)
    rng = random.Random(5)
    for _ in range(30):
        stream = await trio.open_tcp_stream("127.0.0.1", cache.port)
        size = rng.choice([0, 1, 3, 40, 5000])
        junk = struct.pack("!I", size) + rng.randbytes(size) if rng.random() < 0.7 else rng.randbytes(size + 4)
        try:
            await stream.send_all(junk)
        except trio.BrokenResourceError:
            pass  # the node hung up on a bogus length: that is its right
        await stream.aclose()
    till = _channel("till-1")
    await nursery.start(till.run)
    await _joined(till, cache)
    till.send("cache", SkuRequest((4,)))
    with trio.fail_after(5):
        assert (await cache.inbox.receive()).message == SkuRequest((4,))
    assert sum(cache.dropped.values()) > 0
