"""/metrics read by prometheus-client's own parser, and the HTML dashboard rendered by a real headless Chromium."""

import shutil
import tempfile
from urllib.parse import quote_from_bytes

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from tracker import server
from tracker.config import TrackerConfig
from tracker.peerstore import MemoryPeerStore

H = b"\x44" * 20
EVIL = "<script>alert(1)</script>"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


class Clock:
    now = 1_000_000.0

    def __call__(self):
        return self.now


@pytest.fixture
async def tracker(nursery):
    clock = Clock()
    url = await nursery.start(lambda task_status: server.run(TrackerConfig(port=0, open=True, open_stats=True, interval=30),
                                                             clock=clock, task_status=task_status))
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        for i, (node, role, store, left, wan, installed) in enumerate([
            ("cache-17", "cache", "store-17", 0, 1000, 1),
            ("till-1", "device", "store-17", 0, 0, 1),
            ("till-2", "device", "store-17", 0, 0, 1),
            ("till-3", "device", "store-17", 600, 0, 0),
            ("cache-42", "cache", "store-42", 0, 2500, 0),
            ("till-9", "device", "store-42", 1000, 0, 0),
            ("till-x", "device", EVIL, 1000, 0, 0),
        ]):
            q = {"info_hash": H, "peer_id": node.encode().ljust(20, b"-"), "port": 6881, "uploaded": 0,
                 "downloaded": 0, "left": left, "ip": f"127.0.0.{10 + i}", "node": node, "role": role, "store": store,
                 "release": "pos-os@2026.11", "size": 1000, "wan": wan, "lan": 1000 - left, "installed": installed,
                 "class": "pos"}
            raw = "&".join(f"{k}={quote_from_bytes(v if isinstance(v, bytes) else str(v).encode(), safe='')}"
                           for k, v in q.items())
            assert b"failure" not in (await client.get("/announce?" + raw)).content
        clock.now += 100  # three 30 s intervals without an announce: the uninstalled tills are stragglers
        yield url, client


async def test_metrics_are_per_store_and_release_never_per_device(tracker):
    _, client = tracker
    text = (await client.get("/metrics")).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    devices = {(s.labels["store"], s.labels["state"]): s.value for s in families["posswarm_store_devices"].samples}
    assert devices[("store-17", "total")] == 3 and devices[("store-17", "installed")] == 2
    assert devices[("store-17", "stalled")] == 1 and devices[("store-42", "stalled")] == 1
    amp = {s.labels["store"]: s.value for s in families["posswarm_store_wan_amplification"].samples}
    assert amp == {"store-17": 1.0, "store-42": 2.5, EVIL: 0.0}
    cache = {s.labels["store"]: s.labels["state"] for s in families["posswarm_store_cache_state"].samples if s.value}
    assert cache["store-17"] == "installed" and cache["store-42"] == "seeding"
    installed = families["posswarm_store_installed_devices"].samples
    assert {(s.labels["store"], s.labels["device_class"], s.value) for s in installed} == {("store-17", "pos", 2)}
    requests = {s.labels["result"]: s.value for s in families["posswarm_tracker_requests"].samples
                if s.name.endswith("_total") and s.labels["kind"] == "announce" and s.labels["transport"] == "http"}
    assert requests == {"ok": 7, "refused": 0}  # every series there from the start, for rate() and alerts
    assert not any(label in ("node", "peer", "ip") for f in families.values() for s in f.samples for label in s.labels)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian chromium is not installed (CI installs it)")
async def test_dashboard_in_headless_chromium(tracker, artifacts):
    url, _ = tracker
    screenshot = artifacts / "tracker-dashboard.png"
    with tempfile.TemporaryDirectory() as profile, trio.fail_after(60):
        base = ["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}"]
        dom = await trio.run_process([*base, "--dump-dom", url + "/"], capture_stdout=True, capture_stderr=True)
        await trio.run_process([*base, "--window-size=1100,700", f"--screenshot={screenshot}", url + "/"],
                               capture_stdout=True, capture_stderr=True)
    html = dom.stdout.decode()
    assert "pos-os@2026.11" in html and 'http-equiv="refresh"' in html
    assert 'data-store="store-17"' in html and "width:66.7%" in html and "2/3<" in html  # the progress bar
    assert "till-3" in html and "till-9" in html and 'class="stalled"' in html
    assert 'class="over">2.50<' in html  # store-42 pulled the image 2.5 times over its WAN
    assert "<script>" not in html and "&lt;script&gt;" in html  # a hostile store id stays text
    assert screenshot.stat().st_size > 5000


async def _announce(client: httpx.AsyncClient, store: str, node: str, left: int, *, installed: int = 0) -> None:
    q = {"info_hash": H, "peer_id": node.encode().ljust(20, b"-"), "port": 6881, "uploaded": 0, "downloaded": 0,
         "left": left, "node": node, "role": "device", "store": store, "release": "pos-os@2026.11", "size": 1000,
         "wan": 0, "lan": 1000 - left, "installed": installed}
    raw = "&".join(f"{k}={quote_from_bytes(v if isinstance(v, bytes) else str(v).encode(), safe='')}"
                   for k, v in q.items())
    assert b"failure" not in (await client.get("/announce?" + raw)).content


async def test_dashboard_serves_the_last_snapshot_while_the_next_one_builds(nursery):
    # every read finds the snapshot due a rebuild
    config = TrackerConfig(port=0, open=True, open_stats=True, stats_every=0.001)
    url = await nursery.start(lambda task_status: server.run(config, task_status=task_status))
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        await _announce(client, "store-1", "till-1", 500)
        assert "<b>1</b> stores" in (await client.get("/")).text  # no snapshot yet: this one waits for it
        await _announce(client, "store-2", "till-1", 500)
        # /stats waits for the figures as of now; the dashboard answers from the snapshot it has ...
        assert "<b>1</b> stores" in (await client.get("/")).text
        assert "store-2" in (await client.get("/stats")).json()["releases"]["pos-os@2026.11"]["stores"]
        await _announce(client, "store-3", "till-1", 500)
        assert "<b>2</b> stores" in (await client.get("/")).text
        # ... and the rebuild it started in the background shows the newest store soon after.
        with trio.fail_after(10):
            while "<b>3</b> stores" not in (page := (await client.get("/")).text):
                assert "<b>2</b> stores" in page
                await trio.sleep(0.05)
        assert 'data-store="store-3"' in page


async def test_fleet_page_draws_the_rollout_over_time(nursery):
    clock = Clock()
    config = TrackerConfig(port=0, open=True, open_stats=True, stats_every=0.001)
    url = await nursery.start(lambda task_status: server.run(config, clock=clock, task_status=task_status))
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        for till in ("till-1", "till-2", "till-3", "till-4"):
            await _announce(client, "store-1", till, 500)
        assert "<svg" not in (await client.get("/")).text  # one moment is no line yet
        clock.now += 600
        for till in ("till-1", "till-2", "till-3"):
            await _announce(client, "store-1", till, 0, installed=1)
        await client.get("/stats")  # a rebuild ten minutes on: the second point
        page = (await client.get("/")).text
    assert "devices installed over the last 10 min" in page
    assert '<polyline points="0.0,100.0 1000.0,25.0" />' in page  # 0 of 4 installed, then 3 of 4


class FailingStore(MemoryPeerStore):
    """The real store, whose records can be made to fail in the snapshot child (a bug there, say)."""

    failing = False

    def records(self):
        if self.failing:
            raise RuntimeError("records unreadable (a test's fault)")
        return super().records()


async def test_a_failed_background_rebuild_keeps_the_last_page_up(nursery):
    config = TrackerConfig(port=0, open=True, open_stats=True, stats_every=0.001)
    store = FailingStore(peer_ttl=90, retain=86_400)
    url = await nursery.start(lambda task_status: server.run(config, store=store, task_status=task_status))
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        await _announce(client, "store-1", "till-1", 500)
        assert "<b>1</b> stores" in (await client.get("/")).text
        store.failing = True
        for _ in range(3):  # each read starts a rebuild that fails in the child; the page stays
            answer = await client.get("/")
            assert answer.status_code == 200 and "<b>1</b> stores" in answer.text
        for n in range(20):  # ids nobody announced are answered from the snapshot's list: no child, no failure
            assert (await client.get(f"/store/nobody-{n}")).status_code == 404
        store.failing = False
        await _announce(client, "store-2", "till-1", 500)
        with trio.fail_after(10):
            while "<b>2</b> stores" not in (await client.get("/")).text:
                await trio.sleep(0.05)
