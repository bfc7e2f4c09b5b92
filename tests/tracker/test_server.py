"""The running tracker over real HTTP: hand-out per store, stopped peers, scrape, /stats, failures."""

import ipaddress
from urllib.parse import quote_from_bytes

import fastbencode
import httpx
import pytest
import trio

from tracker import server
from tracker.config import TrackerConfig

H = bytes.fromhex("00263d252bff80c328") + bytes(range(200, 211))  # '&', '=', '%', '+' and non-UTF-8 bytes


@pytest.fixture
async def tracker(nursery):
    url = await nursery.start(server.run, TrackerConfig(host="127.0.0.1", port=0, interval=5, min_interval=1, open=True,
                                                        open_stats=True))
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        yield client


def peers(body: bytes) -> list[tuple[str, int]]:
    raw = fastbencode.bdecode(body)[b"peers"]
    return [(str(ipaddress.IPv4Address(raw[i:i + 4])), int.from_bytes(raw[i + 4:i + 6], "big"))
            for i in range(0, len(raw), 6)]


async def announce(client, node, *, ip, info_hash=H, left=0, event="", **extra):
    q = {"info_hash": info_hash, "peer_id": node.encode().ljust(20, b"-")[:20], "port": 6881, "uploaded": 0,
         "downloaded": 0, "left": left, "event": event, "compact": 1, "ip": ip, "node": node,
         "release": "pos-os@2026.11", "size": 1000, **extra}
    raw = "&".join(f"{k}={quote_from_bytes(v if isinstance(v, bytes) else str(v).encode(), safe='')}"
                   for k, v in q.items())
    with trio.fail_after(10):
        response = await client.get("/announce?" + raw)
    assert response.status_code == 200
    return response.content


async def test_store_first_hand_out_and_stats_over_http(tracker):
    await announce(tracker, "seeder", ip="127.0.1.1", role="seeder")
    await announce(tracker, "cache-a", ip="127.0.2.1", role="cache", store="A", wan=1000, installed=1)
    await announce(tracker, "cache-b", ip="127.0.3.1", role="cache", store="B", left=500, wan=500)
    await announce(tracker, "till-a1", ip="127.0.2.2", role="device", store="A", lan=1000, installed=1)
    await announce(tracker, "till-b1", ip="127.0.3.2", role="device", store="B", left=1000)
    body = await announce(tracker, "till-a2", ip="127.0.2.3", role="device", store="A", left=1000,
                          event="started", **{"class": "pos"})
    d = fastbencode.bdecode(body)
    assert (d[b"interval"], d[b"min interval"], d[b"complete"], d[b"incomplete"]) == (5, 1, 3, 3)
    assert peers(body) == [("127.0.2.1", 6881), ("127.0.2.2", 6881)]  # cache first, own store only
    assert sorted(peers(await announce(tracker, "cache-b", ip="127.0.3.1", role="cache", store="B", left=500,
                                      wan=500))) \
        == [("127.0.1.1", 6881), ("127.0.3.2", 6881)]

    await announce(tracker, "till-a1", ip="127.0.2.2", role="device", store="A", event="stopped", lan=1000,
                   installed=1)
    assert peers(await announce(tracker, "till-a2", ip="127.0.2.3", role="device", store="A", left=10)) \
        == [("127.0.2.1", 6881)]

    stats = (await tracker.get("/stats")).json()["releases"]["pos-os@2026.11"]
    a = stats["stores"]["A"]
    assert (a["devices_total"], a["devices_installed"], a["devices_downloading"]) == (2, 1, 1)
    assert a["cache"]["state"] == "installed" and (a["wan_bytes"], a["lan_bytes"]) == (1000, 1000)
    assert stats["stores"]["B"]["wan_amplification"] == 0.5
    assert next(n for n in a["nodes"] if n["node"] == "till-a1")["stopped"] is True
    only_b = (await tracker.get("/stats", params={"store": "B"})).json()
    assert list(only_b["releases"]["pos-os@2026.11"]["stores"]) == ["B"]


async def test_scrape_reports_counts_for_binary_hashes(tracker):
    await announce(tracker, "s", ip="127.0.1.1", role="seeder", event="completed")
    await announce(tracker, "c", ip="127.0.2.1", role="cache", store="A", left=9)
    other = bytes(20)
    response = await tracker.get(f"/scrape?info_hash={quote_from_bytes(H, safe='')}"
                                 f"&info_hash={quote_from_bytes(other, safe='')}")
    assert fastbencode.bdecode(response.content) == {
        b"files": {H: {b"complete": 1, b"incomplete": 1, b"downloaded": 1}}}


@pytest.mark.parametrize("path", ["/announce", "/announce?info_hash=short&peer_id=x&port=1",
                                  "/announce?" + "a=b&" * 3000, "/scrape?info_hash=%00"])
async def test_malformed_request_gets_a_bencoded_failure(tracker, path):
    response = await tracker.get(path)
    assert response.status_code == 200
    reason = fastbencode.bdecode(response.content)[b"failure reason"]
    assert reason and b"Traceback" not in reason


async def test_shutdown_event_stops_the_server_and_the_port_is_released():
    stop = trio.Event()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(lambda task_status: server.run(
                TrackerConfig(port=0, open=True, open_stats=True), shutdown=stop, task_status=task_status))
            async with httpx.AsyncClient(base_url=url) as client:
                assert (await client.get("/stats")).json() == {"releases": {}, "stores": {}}
            stop.set()  # run() returns by itself; the nursery exit waits for it
        with pytest.raises(httpx.ConnectError):
            async with httpx.AsyncClient(base_url=url) as client:
                await client.get("/stats")


async def test_keep_alive_pipelining_http10_and_refusals_on_one_raw_connection(tracker):
    host, port = tracker.base_url.host, tracker.base_url.port
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream(host, port)
        # Two pipelined requests on one connection, answered in order, then HTTP/1.0 closes it.
        await stream.send_all(b"GET /scrape HTTP/1.1\r\nHost: t\r\n\r\nGET /stats HTTP/1.1\r\nHost: t\r\n\r\n"
                              b"GET /scrape HTTP/1.0\r\n\r\n")
        received = b""
        while chunk := await stream.receive_some(65536):
            received += chunk
    assert received.count(b"HTTP/1.1 200 OK") == 3 and b'{"releases":{}' in received
    assert received.endswith(b"Connection: close\r\n\r\nd5:filesdee")
    for raw, status in ((b"POST /announce HTTP/1.1\r\n\r\n", b"405"), (b"GET /" + b"a" * 20000, b"413")):
        with trio.fail_after(10):
            stream = await trio.open_tcp_stream(host, port)
            await stream.send_all(raw + b" HTTP/1.1\r\n\r\n" if raw.endswith(b"a") else raw)
            answer = b""
            while chunk := await stream.receive_some(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 " + status) and b"Connection: close" in answer


async def test_a_client_trickling_its_request_is_cut_off(autojump_clock, nursery):
    config = TrackerConfig(port=0, open=True, open_stats=True)
    url = await nursery.start(server.run, config)
    host, port = url.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    start = trio.current_time()
    await stream.send_all(b"GET /announce?info_hash=")  # and never the rest
    with trio.fail_after(60):
        assert await stream.receive_some(100) == b""  # the tracker closed the connection
    # header_timeout from the first byte of the head; the idle wait before a request is longer.
    assert config.header_timeout <= trio.current_time() - start < config.effective_idle_timeout
