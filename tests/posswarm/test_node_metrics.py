"""A cache's /metrics from its status document, read back by prometheus-client's own parser, to the operator only."""

import base64

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette

from posswarm import http_service, node_metrics
from posswarm.errors import PosswarmError
from tools.lab import write_operator_token


def status(**changes) -> dict:
    doc = {
        "node": "cache-0042", "role": "cache", "store": "S0042", "class": None, "peers": ["till-01", "till-02"],
        "releases": [{"name": "pos-os", "version": "2026.11", "state": "seeding", "done_bytes": 700, "wanted_bytes": 700,
                      "bytes_from_wan": 710, "bytes_from_lan": 0, "bytes_uploaded": 1400, "peers": 2},
                     {"name": "pos-os", "version": "2026.12", "state": "downloading", "done_bytes": 250,
                      "wanted_bytes": 1000, "bytes_from_wan": 250, "bytes_from_lan": 0, "bytes_uploaded": 0,
                      "peers": 1}],
        "central_state": {"fresh": True, "expires": 1_800_000_000.0},
        "tracker": {"last_ok": 1_799_990_000.0}, "catalog": {"last_ok": None},
    }
    return {**doc, **changes}


def families(doc: dict) -> dict:
    return {f.name: f for f in text_string_to_metric_families(node_metrics.exposition(doc).decode())}


def test_release_figures_and_one_state_per_release():
    f = families(status())
    assert {s.labels["release"]: s.value for s in f["posswarm_node_wan_bytes"].samples} == {
        "pos-os@2026.11": 710, "pos-os@2026.12": 250}
    assert {s.labels["release"]: s.value for s in f["posswarm_node_release_done_ratio"].samples} == {
        "pos-os@2026.11": 1.0, "pos-os@2026.12": 0.25}
    on = {(s.labels["release"], s.labels["state"]) for s in f["posswarm_node_release_state"].samples if s.value}
    assert on == {("pos-os@2026.11", "seeding"), ("pos-os@2026.12", "downloading")}
    per_release = [s for s in f["posswarm_node_release_state"].samples if s.labels["release"] == "pos-os@2026.12"]
    assert len(per_release) == len(node_metrics.RELEASE_STATES)  # every state a series, so count() sees zeros
    assert f["posswarm_node_store_peers"].samples[0].value == 2
    info = f["posswarm_node_info"].samples[0].labels
    assert info == {"node": "cache-0042", "store": "S0042", "role": "cache", "device_class": "-"}


def test_what_a_node_does_not_know_yet_is_absent_not_zero():
    f = families(status(releases=[], central_state={"fresh": False, "expires": None}, tracker={"last_ok": None}))
    assert f["posswarm_node_central_state_fresh"].samples[0].value == 0
    # No expiry, no contact: no sample, so "time() - last_ok" alerts cannot fire on a made-up 1970.
    for name in ("posswarm_node_central_state_expires_timestamp_seconds",
                 "posswarm_node_tracker_last_ok_timestamp_seconds", "posswarm_node_catalog_last_ok_timestamp_seconds",
                 "posswarm_node_wan_bytes"):
        assert name not in f or not f[name].samples, name


async def _served(nursery, token_file: str) -> str:
    app = Starlette(routes=[node_metrics.route(status, node_metrics.gate(token_file))])
    return await nursery.start(http_service.run, app, "127.0.0.1")


async def test_metrics_answer_the_operator_token_only(nursery, tmp_path):
    token_file = write_operator_token(tmp_path / "operator.token")
    token = token_file.read_text().strip()
    url = await _served(nursery, str(token_file))
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        for headers in ({}, {"authorization": f"Bearer {token[:-1]}"},
                        {"authorization": "Basic " + base64.b64encode(b"prometheus:" + b"x" * 40).decode()}):
            refused = await client.get("/metrics", headers=headers)
            assert refused.status_code == 401 and refused.text.count("\n") == 1, refused.text
            assert refused.text.startswith("cache /metrics: needs the metrics token") and "S0042" not in refused.text
            assert refused.headers["www-authenticate"].startswith("Basic")
        for headers in ({"authorization": f"Bearer {token}"},
                        {"authorization": "Basic " + base64.b64encode(f"prometheus:{token}".encode()).decode()}):
            served = await client.get("/metrics", headers=headers)
            assert served.status_code == 200 and "posswarm_node_wan_bytes" in served.text


async def test_without_a_token_file_metrics_are_shut_and_a_bad_file_is_a_one_line_error(nursery, tmp_path):
    url = await _served(nursery, "")
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        shut = await client.get("/metrics", headers={"authorization": "Bearer " + "x" * 40})
    assert shut.status_code == 403 and shut.text == (
        "cache /metrics: shut on this cache (set metrics.token_file to the caches' metrics token's file)\n")
    (tmp_path / "short.token").write_text("abc\n")
    with pytest.raises(PosswarmError, match=r"^config 'metrics.token_file' .*short.token: want one token of at least"):
        node_metrics.gate(str(tmp_path / "short.token"))
