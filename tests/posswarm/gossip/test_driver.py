"""The gossip driver over real loopback TCP and TLS: delivery, heartbeats, who a peer is from its certificate,
hostile input dropped and counted."""

from __future__ import annotations

import ssl
import struct

import pytest
import trio

from posswarm.gossip import frames, secure
from posswarm.gossip.driver import StoreChannel
from posswarm.gossip.faults import Faults
from posswarm.gossip.messages import Heartbeat, SalesAck, SkuRequest
from posswarm.identity.revocations import Revocation
from posswarm.identity.tls import peer_context
from tests.posswarm.gossip.certified import STORE, Authority


@pytest.fixture
def authority(tmp_path):
    return Authority(tmp_path / "enrolment")


async def _until(predicate, timeout: float = 10.0, why=lambda: "") -> None:
    with trio.move_on_after(timeout):
        while not predicate():
            await trio.sleep(0.02)
        return
    raise AssertionError(f"not within {timeout} s: {why()}")


async def _joined(till: StoreChannel, cache: StoreChannel) -> None:
    """``till`` learns ``cache`` as mDNS would; the handshakes show each the other's certificate."""
    till.add_peer(cache.node_id, "127.0.0.1", cache.port)
    await _until(lambda: till.alive() == [cache.node_id] and cache.alive() == [till.node_id])


async def _send_frames(stream, *datas: bytes) -> None:
    await stream.send_all(b"".join(struct.pack("!I", len(d)) + d for d in datas))


async def test_messages_flow_and_heartbeats_teach_the_way_back(nursery, authority):
    cache, till = authority.channel("cache", "cache"), authority.channel("till-1")
    await nursery.start(cache.run)
    await nursery.start(till.run)
    till.add_peer("cache", "127.0.0.1", cache.port)  # as mDNS would; the cache learns the till by its hello
    assert not till.send("cache", SkuRequest((1, 2, 3))), "nothing but a hello before a handshake showed the cache"
    await _until(lambda: till.alive("cache") == ["cache"])
    assert till.send("cache", SkuRequest((1, 2, 3)))
    with trio.fail_after(5):
        got = await cache.inbox.receive()
    assert (got.node, got.role, got.message) == ("till-1", "device", SkuRequest((1, 2, 3)))
    await _until(lambda: cache.alive("device") == ["till-1"] and till.alive("cache") == ["cache"])
    assert cache.send("till-1", SalesAck("till-1", "ab" * 8, 5))
    with trio.fail_after(5):
        back = await till.inbox.receive()
    assert (back.node, back.role, back.message) == ("cache", "cache", SalesAck("till-1", "ab" * 8, 5))


async def _certified_client(authority: Authority, port: int, node: str, role: str = "device", store: str = "S042"):
    contexts = secure.Contexts(authority.credential(node, role, store))
    return await secure.dial("127.0.0.1", port, contexts, local=None, connect_s=5, handshake_s=5)


async def _raw_tls_client(authority: Authority, port: int, node: str, store: str = "S042") -> trio.SSLStream:
    """A TLS client showing its certificate that does not check the server's: the server must do the refusing."""
    context = peer_context(authority.credential(node, "device", store), server=False)
    context.verify_mode = ssl.CERT_NONE
    stream = trio.SSLStream(await trio.open_tcp_stream("127.0.0.1", port), context)
    try:
        await stream.do_handshake()
    except trio.BrokenResourceError:
        pass
    return stream


async def _closed_by_peer(stream, timeout: float = 5.0) -> bool:
    with trio.move_on_after(timeout):
        try:
            return await stream.receive_some(10) == b""
        except trio.BrokenResourceError:
            return True
    return False


async def test_uncertified_foreign_and_other_authority_peers_are_refused_after_the_handshake(nursery, authority,
                                                                                              tmp_path):
    cache = authority.channel("cache", "cache")
    await nursery.start(cache.run)
    # Plain TCP speaking gossip v1 (store-key frames): no TLS handshake, nothing read.
    plain = await trio.open_tcp_stream("127.0.0.1", cache.port)
    await _send_frames(plain, b"\x96\x01\xa4S042" + bytes(40))
    assert await _closed_by_peer(plain)
    # TLS with a certificate of another store, and with one from another enrolment authority.
    elsewhere = await _raw_tls_client(authority, cache.port, "till-9", store="S043")
    await _send_frames(elsewhere, frames.encode(SkuRequest((7,)), sender="till-9/b", counter=1))
    assert await _closed_by_peer(elsewhere)
    impostor = await _raw_tls_client(Authority(tmp_path / "other-central"), cache.port, "till-8")
    assert await _closed_by_peer(impostor)
    await _until(lambda: cache.refused["tls"] == 2 and cache.refused["certificate"] == 1, 5, cache.stats)
    assert cache.received == 0 and cache.known() == []
    # The client end checks too: a node of our store never talks to the other store's cache.
    other_cache = authority.channel("cache-b", "cache", store="S043")
    await nursery.start(other_cache.run)
    with pytest.raises(secure.Refused, match="certified for store S043, not ours"):
        await _certified_client(authority, other_cache.port, "till-1")


async def test_a_certified_peer_is_named_by_its_certificate_and_its_bad_frames_are_counted(nursery, authority):
    cache = authority.channel("cache", "cache")
    await nursery.start(cache.run)
    link = await _certified_client(authority, cache.port, "till-2")
    good = frames.encode(SkuRequest((7,)), sender="someone-else/b1", counter=1)
    lie = frames.encode(Heartbeat("till-2", "cache", 1, 7946), sender="till-2/b1", counter=2)  # "I am the cache"
    await _send_frames(link.stream, good, b"\x93garbage-not-a-frame-at-all", good, lie)
    with trio.fail_after(5):
        got = await cache.inbox.receive()
    # The frame said someone-else; the certificate says till-2, a device.
    assert (got.node, got.role, got.message) == ("till-2", "device", SkuRequest((7,)))
    await _until(lambda: cache.dropped["replay"] == 1 and cache.dropped["malformed"] == 1 and cache.dropped["claim"] == 1)
    assert cache.alive("cache") == [] and cache.known() == [], "a claimed role is not a certified one"
    await link.stream.send_all(struct.pack("!I", frames.MAX_FRAME + 1))  # a length we refuse to buffer: hang up
    await _until(lambda: cache.dropped["oversized"] == 1)
    assert await _closed_by_peer(link.stream)
    # ... and still serves honest peers.
    till = authority.channel("till-3")
    await nursery.start(till.run)
    await _joined(till, cache)
    till.send("cache", SkuRequest((9,)))
    with trio.fail_after(5):
        assert (await cache.inbox.receive()).message == SkuRequest((9,))


async def test_a_hint_naming_one_node_where_another_answers_learns_the_certified_one(nursery, authority):
    cache, till = authority.channel("cache", "cache"), authority.channel("till-1")
    other = authority.channel("till-7")
    for channel in (cache, till, other):
        await nursery.start(channel.run)
    till.add_peer("cache", "127.0.0.1", other.port)  # a forged advert: "the cache is at till-7's port"
    await _until(lambda: till.known() == ["till-7"])
    assert till.peers["till-7"].role == "device" and "cache" not in till.peers
    assert till.alive("cache") == [] and not till.send("cache", SalesAck("x", "y", 1))
    await _joined(till, cache)
    assert till.alive("cache") == ["cache"]


async def test_injected_faults_drop_and_duplicate(nursery, authority):
    cache = authority.channel("cache", "cache")
    till = authority.channel("till-1", faults=Faults(drop=0.3, dup=0.5, reorder=0.3), seed=7)
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


async def test_unreachable_peer_is_counted_and_send_never_blocks(nursery, authority):
    cache, till = authority.channel("cache", "cache"), authority.channel("till-1")
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


async def test_reorder_alone_loses_nothing(nursery, authority):
    cache = authority.channel("cache", "cache")
    till = authority.channel("till-1", faults=Faults(reorder=0.4), seed=3)
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


async def test_random_bytes_on_the_socket_never_hurt_the_node(nursery, authority):
    import random

    cache = authority.channel("cache", "cache")
    await nursery.start(cache.run)
    rng = random.Random(5)
    for _ in range(30):
        stream = await trio.open_tcp_stream("127.0.0.1", cache.port)
        size = rng.choice([0, 1, 3, 40, 5000])
        junk = struct.pack("!I", size) + rng.randbytes(size) if rng.random() < 0.7 else rng.randbytes(size + 4)
        try:
            await stream.send_all(junk)
        except trio.BrokenResourceError:
            pass  # the node hung up on a bogus handshake: that is its right
        await stream.aclose()
    till = authority.channel("till-1")
    await nursery.start(till.run)
    await _joined(till, cache)
    till.send("cache", SkuRequest((4,)))
    with trio.fail_after(5):
        assert (await cache.inbox.receive()).message == SkuRequest((4,))
    assert cache.refused["tls"] + cache.refused["no_auth"] > 0 and cache.received >= 1


async def test_a_certificate_that_expires_while_connected_is_heard_no_more(nursery, authority):
    import datetime

    cache = authority.channel("cache", "cache")
    await nursery.start(cache.run)
    short = authority.credential("till-5", lifetime=datetime.timedelta(seconds=3))
    link = await secure.dial("127.0.0.1", cache.port, secure.Contexts(short), local=None, connect_s=5, handshake_s=5)
    await _send_frames(link.stream, frames.encode(SkuRequest((1,)), sender="till-5/b", counter=1))
    with trio.fail_after(5):
        assert (await cache.inbox.receive()).message == SkuRequest((1,))
    while datetime.datetime.now(datetime.UTC) < short.identity.not_after:
        await trio.sleep(0.1)  # the certificate's own clock, not a guess: it ends at not_after
    await _send_frames(link.stream, frames.encode(SkuRequest((2,)), sender="till-5/b", counter=2))
    await _until(lambda: cache.dropped["expired"] == 1, 5, cache.stats)
    assert cache.inbox.statistics().current_buffer_used == 0


async def test_a_node_revoked_while_connected_is_heard_no_more_and_cannot_connect_again(nursery, authority):
    own = authority.credential("cache", "cache")
    cache = StoreChannel(credential=own, address="127.0.0.1")
    await nursery.start(cache.run)
    stolen = authority.credential("till-6")
    link = await secure.dial("127.0.0.1", cache.port, secure.Contexts(stolen), local=None, connect_s=5, handshake_s=5)
    await _send_frames(link.stream, frames.encode(SkuRequest((1,)), sender="till-6/b", counter=1))
    with trio.fail_after(5):
        assert (await cache.inbox.receive()).message == SkuRequest((1,))
    # What the cache's CentralTrust does when its refresh verifies targets listing the till.
    revoked_at = int(stolen.identity.issued_at.timestamp())
    own.revoked.replace((Revocation(STORE, "till-6", revoked_at, "stolen"),))
    await _send_frames(link.stream, frames.encode(SkuRequest((2,)), sender="till-6/b", counter=2))
    await _until(lambda: cache.dropped["revoked"] == 1, 5, cache.stats)
    assert cache.inbox.statistics().current_buffer_used == 0
    # A new connection: the till's end finishes the handshake (TLS 1.3), the cache closes it unread.
    again = await secure.dial("127.0.0.1", cache.port, secure.Contexts(stolen), local=None, connect_s=5, handshake_s=5)
    try:
        await _send_frames(again.stream, frames.encode(SkuRequest((3,)), sender="till-6/c", counter=1))
    except trio.BrokenResourceError:
        pass
    await _until(lambda: cache.refused["certificate"] == 1, 5, cache.stats)
    assert cache.inbox.statistics().current_buffer_used == 0


async def test_a_cache_tells_a_till_revoked_since_it_dialled_it_nothing_more(nursery, authority):
    own, revoked = authority.credential("cache", "cache"), authority.credential("till-7")
    cache = StoreChannel(credential=own, address="127.0.0.1")
    till = StoreChannel(credential=revoked, address="127.0.0.1")
    await nursery.start(cache.run)
    await nursery.start(till.run)
    await _joined(till, cache)
    cache.send("till-7", SkuRequest((1,)))
    with trio.fail_after(5):
        while (await till.inbox.receive()).message != SkuRequest((1,)):
            pass
    own.revoked.replace((Revocation(STORE, "till-7", int(revoked.identity.issued_at.timestamp()), ""),))
    cache.send("till-7", SkuRequest((2,)))  # the open stream is closed, the next dial refused in its handshake
    await _until(lambda: cache.refused["certificate"] >= 1, 5, cache.stats)
    with pytest.raises(trio.WouldBlock):
        while True:
            assert till.inbox.receive_nowait().message != SkuRequest((2,))
