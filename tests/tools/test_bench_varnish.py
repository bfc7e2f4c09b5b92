"""The Varnish baseline's checks on a real varnishd: one fetch streamed to every till passes; no streaming,
or no coalescing, fails with the reason."""

from __future__ import annotations

import shutil
import socket

import httpx
import pytest
import trio

from posswarm.errors import PosswarmError
from tools.netsim import varnish

pytestmark = pytest.mark.skipif(shutil.which("varnishd") is None, reason="needs varnish (apt-get install varnish)")

TILLS = 3
BODY = bytes(range(256)) * 4096  # 1 MiB
HOLD_S = 1.0  # the slow WAN: the second half of the image comes this long after the first


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _central(fetches: list[bool], every_till_has_bytes: trio.Event, *, task_status=trio.TASK_STATUS_IGNORED):
    """A backend behind a slow link: half the image, the rest HOLD_S later. ``fetches`` gets one entry a fetch:
    whether every till already held some of the image when the rest was sent (it did only if Varnish streamed)."""

    async def answer(stream: trio.SocketStream) -> None:
        head = b""
        while b"\r\n\r\n" not in head and len(head) < 16384:
            data = await stream.receive_some(4096)
            if not data:
                return
            head += data
        half = len(BODY) // 2
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                              b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(BODY) + BODY[:half])
        await trio.sleep(HOLD_S)  # the link, not a wait for the test: streaming must show within it
        fetches.append(every_till_has_bytes.is_set())
        await stream.send_all(BODY[half:])
        await stream.aclose()

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(answer, listeners)


@pytest.mark.parametrize("change, says", [
    (None, None),
    (("set beresp.do_stream = true;", "set beresp.do_stream = false;"), "is beresp.do_stream off"),
    (("sub vcl_backend_response", "sub vcl_recv { return (pass); }\nsub vcl_backend_response"), "coalescing off"),
])
async def test_one_streamed_fetch_passes_and_anything_else_fails_loudly(tmp_path, change, says):
    fetches: list[bool] = []
    every_till_has_bytes = trio.Event()
    got = [0]

    async def till(client: httpx.AsyncClient, url: str) -> None:
        received = 0
        async with client.stream("GET", url) as response:
            assert response.status_code == 200
            async for chunk in response.aiter_raw():
                if received == 0 and chunk:
                    got[0] += 1
                    if got[0] == TILLS:
                        every_till_has_bytes.set()
                received += len(chunk)
        assert received == len(BODY)

    with trio.fail_after(120):  # varnishd compiles its VCL with cc: seconds on a loaded machine
        async with trio.open_nursery() as nursery:
            port = await nursery.start(_central, fetches, every_till_has_bytes)
            text = varnish.vcl("127.0.0.1", port)
            if change:
                assert change[0] in text
                text = text.replace(*change)
            listen = f"127.0.0.1:{_free_port()}"
            pidfile = await trio.to_thread.run_sync(varnish.start, tmp_path, listen, text, 64 << 20)
            try:
                async with httpx.AsyncClient(timeout=20) as client, trio.open_nursery() as tills:
                    for _ in range(TILLS):
                        tills.start_soon(till, client, f"http://{listen}/pos-image.zst")
                if says is None:
                    found = await trio.to_thread.run_sync(varnish.evidence, tmp_path / "n", "/pos-image.zst", TILLS)
                    assert found["backend_fetches"] == 1 and fetches == [True]  # the tills saw it stream too
                    assert found["tills_served"] == found["tills_streamed"] == TILLS
                    assert found["coalesced"] == TILLS - 1 and found["misses"] == 1
                    assert found["first_delivery_before_fetch_end_s"] > 0
                else:
                    # without streaming no till had a byte before the whole image was there; without
                    # coalescing every till had its own fetch
                    assert fetches == ([False] if "stream" in says else [True] * TILLS)
                    with pytest.raises(PosswarmError, match=says):
                        await trio.to_thread.run_sync(varnish.evidence, tmp_path / "n", "/pos-image.zst", TILLS)
            finally:
                await varnish.stop(pidfile)
            nursery.cancel_scope.cancel()
