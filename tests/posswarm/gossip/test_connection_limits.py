"""Incoming gossip connections are capped per address and in all; excess ones are closed at once, silent ones soon."""

from __future__ import annotations

import pytest
import trio

from posswarm.gossip.inbound import AUTH_S
from tests.posswarm.gossip.certified import Authority


@pytest.fixture
def authority(tmp_path):
    return Authority(tmp_path / "enrolment")


async def _until(predicate, timeout: float = 10.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.02)


async def _closed_by_peer(stream: trio.SocketStream, timeout: float) -> bool:
    with trio.move_on_after(timeout):
        try:
            return await stream.receive_some(1) == b""
        except trio.BrokenResourceError:
            return True
    return False


async def _connect(port: int, source: str) -> trio.SocketStream:
    return await trio.open_tcp_stream("127.0.0.1", port, local_address=source)


async def test_connections_beyond_the_per_address_limit_are_closed_at_once(nursery, authority):
    till = authority.channel("till-1", max_per_address=3)
    await nursery.start(till.run)
    held = [await _connect(till.port, "127.0.0.5") for _ in range(3)]
    await _until(lambda: till.stats()["connections"] == 3)
    extra = [await _connect(till.port, "127.0.0.5") for _ in range(4)]
    for stream in extra:
        assert await _closed_by_peer(stream, 2.0), "an excess connection must be closed at once, not held"
    assert till.refused["per_address"] == 4
    assert till.stats()["connections"] == 3
    # Another address is not affected by the first one's flood: an honest peer joins.
    cache = authority.channel("cache", "cache", address="127.0.0.6")
    await nursery.start(cache.run)
    cache.add_peer("till-1", "127.0.0.1", till.port)
    await _until(lambda: cache.alive() == ["till-1"] and till.alive() == ["cache"])
    for stream in held:
        await stream.aclose()


async def test_connections_beyond_the_total_limit_are_closed_at_once(nursery, authority):
    till = authority.channel("till-1", max_connections=5, max_per_address=2)
    await nursery.start(till.run)
    held = [await _connect(till.port, f"127.0.1.{i // 2 + 1}") for i in range(5)]  # 3 addresses, 5 connections
    await _until(lambda: till.stats()["connections"] == 5)
    extra = await _connect(till.port, "127.0.1.9")
    assert await _closed_by_peer(extra, 2.0)
    assert till.refused["total"] == 1
    await held[0].aclose()  # a slot frees up: the next one is taken
    await _until(lambda: till.stats()["connections"] == 4)
    again = await _connect(till.port, "127.0.1.9")
    await _until(lambda: till.stats()["connections"] == 5)
    assert not await _closed_by_peer(again, 0.3)


async def test_a_connection_that_never_finishes_a_handshake_is_closed(nursery, authority):
    till = authority.channel("till-1")
    await nursery.start(till.run)
    silent = await _connect(till.port, "127.0.0.7")
    talker = await _connect(till.port, "127.0.0.7")
    await talker.send_all(b"\x16\x03\x01\x00\x20")  # the start of a TLS record that never comes
    for stream in (silent, talker):
        assert await _closed_by_peer(stream, AUTH_S + 5.0), till.stats()
    await _until(lambda: till.stats()["connections"] == 0)
    assert till.refused["no_auth"] == 2 and till.received == 0, till.stats()
