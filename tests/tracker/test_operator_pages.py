"""The tracker's read pages (/stats, /metrics, the dashboard, store search and pages) answer the operator token only."""

import base64
from urllib.parse import quote_from_bytes

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from posswarm.guess_limit import BURST
from tools.lab import write_operator_token
from tracker import server
from tracker.config import TrackerConfig

PAGES = ("/stats", "/metrics", "/", "/stores?q=S-sec", "/store/S-secret-17")
STORE = "S-secret-17"  # announced before every refusal: no refusal may name it


def basic(password: str, user: str = "operator") -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
async def tracker(nursery, tmp_path):
    """The URL of a tracker started with an operator token, one store announced, and the token."""
    token_file = write_operator_token(tmp_path / "operator.token")
    config = TrackerConfig(port=0, open=True, operator_token_file=str(token_file), stats_every=0.01)
    url = await nursery.start(server.run, config)
    q = {"info_hash": b"\x21" * 20, "peer_id": b"till-1".ljust(20, b"-"), "port": 6881, "uploaded": 0,
         "downloaded": 0, "left": 0, "node": "till-1", "role": "device", "store": STORE, "release": "pos-os@1",
         "size": 10, "wan": 0, "lan": 10, "installed": 1}
    raw = "&".join(f"{k}={quote_from_bytes(v if isinstance(v, bytes) else str(v).encode(), safe='')}"
                   for k, v in q.items())
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        assert b"failure" not in (await client.get("/announce?" + raw)).content
    return url, token_file.read_text().strip()


def refusals(metrics_text: str) -> dict[str, float]:
    family = next(f for f in text_string_to_metric_families(metrics_text) if f.name == "posswarm_tracker_operator_refused")
    return {s.labels["reason"]: s.value for s in family.samples if s.name.endswith("_total")}


async def test_every_read_page_refuses_no_or_a_wrong_credential_in_one_line_and_serves_the_token(tracker):
    url, token = tracker
    for n, page in enumerate(PAGES):
        # Each page's guesses from an address of its own: four wrong tokens a page, under the limit per address.
        transport = httpx.AsyncHTTPTransport(local_address=f"127.0.0.{10 + n}")
        async with httpx.AsyncClient(base_url=url, timeout=30, transport=transport) as client:
            for headers in ({}, {"authorization": f"Bearer {token}x"}, basic(token + "x"), basic("", user=token),
                            {"authorization": f"Basic {token}"}, {"authorization": token}):
                refused = await client.get(page, headers=headers)
                assert refused.status_code == 401, (page, headers, refused.text)
                assert refused.text.count("\n") == 1 and refused.text.endswith("\n"), refused.text
                assert "needs the operator token" in refused.text and "posswarm-stats --token-file" in refused.text
                assert STORE not in refused.text and "pos-os" not in refused.text and token not in refused.text
                assert refused.headers["www-authenticate"].startswith('Basic realm="posswarm tracker"')
            for headers in ({"authorization": f"Bearer {token}"}, {"authorization": f"bearer  {token}"},
                            basic(token), basic(token, user="")):
                served = await client.get(page, headers=headers)
                assert served.status_code in (200, 303), (page, headers, served.text)
                assert STORE in served.text or served.headers.get("location") == f"/store/{STORE}", (page, served.text)
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        health = await client.get("/healthz")
        assert health.status_code == 200 and health.content == b'{"ok":true}'
        counted = refusals((await client.get("/metrics", headers=basic(token))).text)
    # No secret at all (or none we could read) is a first visit, not a guess: counted apart.
    assert counted == {"missing": len(PAGES) * 4, "wrong": len(PAGES) * 2, "limited": 0}


async def test_wrong_tokens_from_one_address_are_limited_and_the_limit_is_counted(tracker):
    url, token = tracker
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        for _ in range(BURST):
            assert (await client.get("/stats", headers={"authorization": "Bearer " + "g" * 40})).status_code == 401
        for headers in ({"authorization": f"Bearer {token}"}, {"authorization": "Bearer " + "g" * 40}):
            # While the address is held, even the right token is not looked at: a guess would otherwise tell.
            held = await client.get("/stats", headers=headers)
            assert held.status_code == 429 and held.text.count("\n") == 1 and STORE not in held.text, held.text
            assert "too many wrong operator tokens from 127.0.0.1; retry in" in held.text
            assert 0 < int(held.headers["retry-after"]) <= 6
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/metrics", headers={"authorization": f"Bearer {token}"})).status_code == 429
    elsewhere = httpx.AsyncHTTPTransport(local_address="127.0.0.99")  # another address is not held
    async with httpx.AsyncClient(base_url=url, timeout=30, transport=elsewhere) as client:
        metrics = await client.get("/metrics", headers={"authorization": f"Bearer {token}"})
    assert metrics.status_code == 200
    assert refusals(metrics.text) == {"missing": 0, "wrong": BURST, "limited": 3}
