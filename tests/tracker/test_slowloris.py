"""A slowloris and a connection flood against a real posswarm-tracker process while a till keeps announcing."""

import time
from urllib.parse import quote_from_bytes

import trio

from tools.tracker_load import attack

H = b"\x88" * 20
SOURCES = [f"127.0.200.{i}" for i in range(1, 9)]  # 8 attacking addresses x 16 = 128 connections for 64 slots


def announce_request(n: int) -> bytes:
    q = (f"info_hash={quote_from_bytes(H, safe='')}&peer_id=-PS0100-{n:012d}&port={7000 + n}&uploaded=0"
         f"&downloaded=0&left=0&compact=1&node=till-{n}&store=S1&role=device")
    return f"GET /announce?{q} HTTP/1.1\r\nHost: tracker\r\nConnection: close\r\n\r\n".encode()


async def one_announce(host: str, port: int, n: int) -> bytes:
    stream = await trio.open_tcp_stream(host, port, local_address="127.0.0.3")
    async with stream:
        await stream.send_all(announce_request(n))
        answer = b""
        while chunk := await stream.receive_some(65536):
            answer += chunk
    return answer


async def test_announces_are_answered_through_a_slowloris_and_a_flood(tmp_path, tracker_process, nursery):
    config = tmp_path / "tracker.toml"
    config.write_text('listen = "127.0.0.1:0"\nopen = true\nopen_stats = true\nmax_connections = 64\nmax_connections_per_address = 16\n'
                      'header_timeout = 2\ninterval = 2\nidle_timeout = 3\n')
    url = await tracker_process(config)
    host, port = url.removeprefix("http://").rsplit(":", 1)
    port = int(port)
    result: dict = {}

    async def attacker():
        result.update(await attack(host, port, sources=SOURCES, per_source=16, until=trio.current_time() + 7,
                                   trickle_every=0.3))

    nursery.start_soon(attacker)
    await trio.sleep(1.5)  # let the attack take every slot first (a head start, not a wait for the system under test)
    latencies = []
    with trio.fail_after(30):
        for n in range(100):
            started = time.monotonic()
            answer = await one_announce(host, port, n)
            latencies.append(time.monotonic() - started)
            assert answer.startswith(b"HTTP/1.1 200 OK") and b"8:intervali" in answer, answer[:200]
        while not result:  # the attack ends on its own after 7 s
            await trio.sleep(0.05)
    latencies.sort()
    # Every attacking connection tried is more than the tracker's slots; the tracker cut them loose.
    assert result["opened"] > 64 and result["ended_by_tracker"] >= result["opened"] - len(SOURCES) * 16
    assert latencies[98] < 1.0, latencies[-5:]
