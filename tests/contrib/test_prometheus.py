"""The shipped alert rules under promtool, and the real Prometheus scraping a running tracker and store cache."""

import json
import re
import shutil
import socket
import subprocess
from pathlib import Path
from urllib.parse import quote_from_bytes

import httpx
import pytest
import trio

from tools.lab import Lab, write_image

CONTRIB = Path(__file__).resolve().parents[2] / "contrib"
RULES = CONTRIB / "prometheus" / "posswarm-alerts.yml"
DASHBOARD = CONTRIB / "grafana" / "posswarm-fleet.json"
needs_prometheus = pytest.mark.skipif(shutil.which("prometheus") is None or shutil.which("promtool") is None,
                                      reason="Debian prometheus is not installed (CI installs it)")


def dashboard_queries() -> list[str]:
    """Every PromQL expression of the Grafana dashboard, with its template variables filled as Grafana would."""
    doc = json.loads(DASHBOARD.read_text())
    return [t["expr"].replace("$release", ".*") for p in doc["panels"] for t in p.get("targets", [])]


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\bposswarm_[a-z_]+\b", expr))


@needs_prometheus
def test_alert_rules_pass_promtool_and_their_unit_tests():
    check = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True)
    assert check.returncode == 0 and "SUCCESS: 9 rules found" in check.stdout, check.stdout + check.stderr
    tests = CONTRIB / "prometheus" / "tests" / "posswarm-alerts.test.yml"
    run = subprocess.run(["promtool", "test", "rules", str(tests)], capture_output=True, text=True)
    assert run.returncode == 0 and "SUCCESS" in run.stdout, run.stdout + run.stderr


def test_grafana_dashboard_is_well_formed():
    doc = json.loads(DASHBOARD.read_text())
    panels = doc["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    for p in panels:
        grid = p["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, p["title"]  # Grafana's grid is 24 columns
        if p["type"] != "row":
            assert p["targets"] and all(t["expr"] and t["datasource"]["uid"] == "${datasource}" for t in p["targets"])
    names = {v["name"] for v in doc["templating"]["list"]}
    assert names == {"datasource", "release"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def _announce(tracker: str, store: str, node: str, role: str, *, wan: int, left: int, size: int,
                    verify) -> None:
    q = {"info_hash": b"\x5a" * 20, "peer_id": node.encode().ljust(20, b"-"), "port": 6881, "uploaded": 0,
         "downloaded": 0, "left": left, "node": node, "role": role, "store": store, "release": "pos-os@2026.11",
         "size": size, "wan": wan, "lan": 0, "installed": 0 if left else 1}
    raw = "&".join(f"{k}={quote_from_bytes(v if isinstance(v, bytes) else str(v).encode(), safe='')}"
                   for k, v in q.items())
    async with httpx.AsyncClient(timeout=10, verify=verify) as client:
        assert b"failure" not in (await client.get(f"{tracker}/announce?{raw}")).content


async def _until(check, client: httpx.AsyncClient):
    """Poll Prometheus's API until ``check`` returns something (it scrapes and evaluates every second)."""
    while True:
        found = await check(client)
        if found:
            return found
        await trio.sleep(0.5)


@needs_prometheus
async def test_prometheus_scrapes_tracker_and_cache_and_the_rules_and_panels_evaluate(tmp_path, nursery):
    lab = Lab(tmp_path / "lab", devices=1)
    with trio.fail_after(120):
        await lab.start_central(nursery)
        for node in [lab.cache, *lab.devices]:
            await lab.start_node(nursery, node)
        await lab.publish(write_image(tmp_path / "image.bin", 2), "1.0")
        await lab.wait_installed("pos-image", "1.0")
    # A second store whose cache pulled the image three times over its WAN, and whose till is stuck.
    await _announce(lab.tracker_url, "S-far", "cache-far", "cache", wan=3000, left=0, size=1000,
                    verify=lab.central_tls)
    await _announce(lab.tracker_url, "S-far", "till-far", "device", wan=0, left=1000, size=1000,
                    verify=lab.central_tls)

    cache_url = lab.status_of(lab.cache)["http_url"]
    config = (RULES.parent / "prometheus.yml").read_text()
    config = (config.replace("30s", "1s").replace("/etc/prometheus/posswarm-alerts.yml", str(RULES))
              .replace('"tracker-1.central.example:6969", "tracker-2.central.example:6969"',
                       json.dumps(lab.tracker_url.removeprefix("https://")))
              .replace("/etc/posswarm/enrolment-ca.crt", str(lab.central_keys.authority))
              .replace("/etc/prometheus/posswarm-caches.json", str(tmp_path / "caches.json"))
              .replace("/etc/prometheus/posswarm-operator.token", str(lab.operator_token_file))
              .replace("/etc/prometheus/posswarm-cache-metrics.token", str(lab.metrics_token_file)))
    (tmp_path / "caches.json").write_text(json.dumps([{"targets": [cache_url.removeprefix("https://")],
                                                        "labels": {"store": lab.store}}]))
    (tmp_path / "prometheus.yml").write_text(config)
    port = _free_port()
    await nursery.start(lambda task_status: _prometheus(tmp_path, port, task_status))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as api:
        with trio.fail_after(60):
            async def targets_up(client):
                active = (await client.get("/api/v1/targets")).json()["data"]["activeTargets"]
                return len(active) == 2 and all(t["health"] == "up" for t in active) and active

            targets = await _until(targets_up, api)
            assert {t["labels"]["job"] for t in targets} == {"posswarm-tracker", "posswarm-cache"}

            far = {("PosswarmWanAmplification", "S-far"), ("PosswarmStoreStalled", "S-far")}

            async def pending(client):
                alerts = (await client.get("/api/v1/alerts")).json()["data"]["alerts"]
                found = {(a["labels"]["alertname"], a["labels"].get("store")): a["state"] for a in alerts}
                return found if far <= set(found) else None

            # The rules evaluate against what was scraped: the far store's alerts wait out their `for:`
            # (its till stalls after 3 announce intervals of the lab's tracker, 6 s).
            alerts = await _until(pending, api)
            assert {alerts[key] for key in far} == {"pending"}
            rules = [r for g in (await api.get("/api/v1/rules")).json()["data"]["groups"] for r in g["rules"]]
            assert len(rules) == 9 and all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError"))
                                                                                 for r in rules]
            assert not any(store == lab.store for _, store in alerts)  # the lab's own store is healthy

            # Every metric the Grafana dashboard names is exported by the tracker or the cache, and scraped.
            wanted = set().union(*map(metric_names, dashboard_queries()))
            scraped = set((await api.get("/api/v1/label/__name__/values")).json()["data"])
            assert wanted <= scraped, sorted(wanted - scraped)
            assert {"posswarm_node_wan_bytes", "posswarm_node_store_peers", "posswarm_node_release_state"} <= scraped
            # The cache's own figures: the release seeding, taken over the WAN once (its size at most, on the wire).
            seeding = (await api.get("/api/v1/query", params={
                "query": 'posswarm_node_release_state{job="posswarm-cache",state="seeding"} == 1'})).json()
            assert [r["metric"]["release"] for r in seeding["data"]["result"]] == ["pos-image@1.0"]
            wan = (await api.get("/api/v1/query", params={"query": "posswarm_node_wan_bytes"})).json()
            size = lab.release_of(lab.cache, "pos-image", "1.0")["size"]
            assert 0 < float(wan["data"]["result"][0]["value"][1]) <= 1.05 * size
            # And every panel's query runs; those over the rollout find the lab's store.
            for expr in dashboard_queries():
                answer = (await api.get("/api/v1/query", params={"query": expr})).json()
                assert answer["status"] == "success", (expr, answer)
            installed = (await api.get("/api/v1/query", params={"query": dashboard_queries()[0]})).json()
            progress = {r["metric"]["release"]: float(r["value"][1]) for r in installed["data"]["result"]}
            assert progress == {"pos-image@1.0": 1.0, "pos-os@2026.11": 0.0}


async def _prometheus(workdir: Path, port: int, task_status) -> None:
    cmd = ["prometheus", f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'tsdb'}",
           f"--web.listen-address=127.0.0.1:{port}"]
    process = await trio.lowlevel.open_process(cmd, stderr=subprocess.PIPE)
    try:
        log = b""
        while b"Server is ready to receive web requests" not in log:
            chunk = await process.stderr.receive_some(65536)
            if not chunk:
                raise AssertionError(f"prometheus exited: {log.decode(errors='replace')[-2000:]}")
            log += chunk
        task_status.started()
        async for _chunk in process.stderr:  # a full pipe would stall it
            pass
    finally:
        process.terminate()
        with trio.CancelScope(shield=True):
            await process.wait()
