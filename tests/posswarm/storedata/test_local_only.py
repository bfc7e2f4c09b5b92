"""The local API refuses web pages (cross-origin POSTs, DNS rebinding) and non-JSON bodies, over a real socket."""

from __future__ import annotations

import httpx
import pytest

from posswarm import http_service
from posswarm.storedata.api import local_app
from posswarm.storedata.device import DeviceData
from posswarm.storedata.local_only import refusal
from tests.posswarm.gossip.certified import Authority

SALE = b'{"lines": [{"sku": "SKU1", "qty": 1, "unit_cents": 100}]}'
SERVER = ("127.0.0.1", 7947)
JSON = {"content-type": "application/json"}


@pytest.fixture
async def api(nursery, tmp_path):
    channel = Authority(tmp_path / "enrolment").channel("till-1")
    await nursery.start(channel.run)
    device = DeviceData(channel, outbox_path=str(tmp_path / "outbox.sqlite"), sku_path=str(tmp_path / "sku.sqlite"),
                        device_id="till-1")
    await nursery.start(device.run)
    url = await nursery.start(http_service.run, local_app(device), "127.0.0.1", 0)
    async with httpx.AsyncClient(base_url=url) as client:
        yield client, device


def _one_line_error(response: httpx.Response) -> str:
    error = response.json()["error"]
    assert "\n" not in error and error.startswith("local API: ")
    return error


async def test_a_web_pages_simple_cross_origin_post_is_refused_and_records_nothing(api):
    client, device = api
    # What a page's fetch(..., {mode: "no-cors", body}) sends: text/plain, no preflight.
    plain = await client.post("/sales", content=SALE, headers={"content-type": "text/plain;charset=UTF-8"})
    assert plain.status_code == 415 and "application/json" in _one_line_error(plain)
    with_origin = await client.post("/sales", content=SALE, headers={**JSON, "origin": "http://ads.example"})
    assert with_origin.status_code == 403 and "web page" in _one_line_error(with_origin)
    fetch_site = await client.post("/sales", content=SALE, headers={**JSON, "sec-fetch-site": "cross-site"})
    assert fetch_site.status_code == 403
    assert (await device.status())["sales"]["committed"] == 0
    # The POS itself still sells.
    ok = await client.post("/sales", content=SALE, headers=JSON)
    assert ok.status_code == 201
    assert (await device.status())["sales"]["committed"] == 1


async def test_dns_rebinding_cannot_read_the_last_sale(api):
    client, _ = api
    assert (await client.post("/sales", content=SALE, headers=JSON)).status_code == 201
    port = client.base_url.port
    rebound = await client.get("/sales/last", headers={"host": f"attacker.example:{port}"})
    assert rebound.status_code == 403 and "not this listener" in _one_line_error(rebound)
    other_port = await client.get("/sales/last", headers={"host": f"127.0.0.1:{port + 1}"})
    assert other_port.status_code == 403
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}"):
        assert (await client.get("/sales/last", headers={"host": host})).json()["seq"] == 1
    typed = await client.get("/storedata", headers={"sec-fetch-site": "none"})  # a technician typed the URL
    assert typed.status_code == 200


@pytest.mark.parametrize(
    ("method", "headers", "expected"),
    [
        ("GET", {"host": "127.0.0.1:7947"}, None),
        ("GET", {"host": "localhost:7947"}, None),
        ("GET", {"host": "[::1]:7947"}, None),
        ("GET", {}, 403),  # no Host at all
        ("GET", {"host": "127.0.0.1"}, 403),  # port 80 is not ours
        ("GET", {"host": "127.0.0.1.nip.io:7947"}, 403),
        ("GET", {"host": "127.0.0.1:7947", "origin": "null"}, 403),  # a sandboxed iframe or a file:// page
        ("GET", {"host": "127.0.0.1:7947", "sec-fetch-site": "same-site"}, 403),  # a page on another local port
        ("GET", {"host": "127.0.0.1:7947", "sec-fetch-site": "none"}, None),
        ("POST", {"host": "127.0.0.1:7947"}, 415),
        ("POST", {"host": "127.0.0.1:7947", "content-type": "application/x-www-form-urlencoded"}, 415),
        ("POST", {"host": "127.0.0.1:7947", "content-type": "Application/JSON; charset=utf-8"}, None),
    ],
)
def test_refusal_rules(method, headers, expected):
    refused = refusal(method, headers, SERVER)
    assert (refused[0] if refused else None) == expected
