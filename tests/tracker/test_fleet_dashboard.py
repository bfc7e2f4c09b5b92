"""The dashboard of a tracker holding 5,000 stores x 20 tills, read in a real headless Chromium: fast, searchable, unbroken."""

import queue
import threading
import time
from urllib.parse import quote

import httpx
import pytest
import trio

from tests.tracker import simulated_fleet as fleet
from tests.tracker.cdp import chromium, needs_chromium
from tools.lab import write_operator_token
from tracker import server
from tracker.config import TrackerConfig

NOW = 1_000_000.0
WIDTHS = (1280, 800)  # a desk screen, and half of one beside a bridge call


@pytest.fixture(scope="module")
def fleet_tracker(tmp_path_factory):
    """One tracker holding the fleet for the module's tests, which only read it: filling the store and building its
    snapshot took ~50 s at a load of 16, once per test before. pytest-trio gives each test a trio loop of its own,
    so this tracker runs on one of its own in a thread, stopped by its ``shutdown`` event after the last test."""
    # One snapshot for the whole module (its clock stands at NOW, nothing in it is older than its retention): first
    # renders are timed against a built snapshot, and its rebuild is timed apart.
    token_file = write_operator_token(tmp_path_factory.mktemp("operator") / "operator.token")
    config = TrackerConfig(port=0, open=True, interval=30, stats_every=3600, operator_token_file=str(token_file))
    token = token_file.read_text().strip()
    ready: queue.Queue = queue.Queue()

    async def serve() -> None:
        shutdown = trio.Event()
        async with trio.open_nursery() as nursery:
            url = await nursery.start(lambda task_status: server.run(
                config, store=fleet.fill(NOW), clock=lambda: NOW, shutdown=shutdown, task_status=task_status))
            ready.put((url, shutdown, trio.lowlevel.current_trio_token()))

    def thread() -> None:
        try:
            trio.run(serve)
        except BaseException as exc:  # the test that waits for the URL fails with it
            ready.put(exc)

    runner = threading.Thread(target=thread, name="fleet-tracker", daemon=True)
    runner.start()
    started = ready.get(timeout=240)
    if isinstance(started, BaseException):
        raise started
    url, shutdown, trio_token = started
    try:
        started = time.monotonic()
        page = httpx.get(url + "/", timeout=120, auth=("operator", token)).text
        rebuild = time.monotonic() - started
        print(f"snapshot of {fleet.STORES * (fleet.TILLS + 1):,} nodes built in {rebuild:.2f} s, page {len(page):,} bytes")
        yield url, page, token
    finally:
        trio.from_thread.run_sync(shutdown.set, trio_token=trio_token)
        runner.join(timeout=60)
        assert not runner.is_alive(), "the fleet tracker did not stop on its shutdown event"


async def test_fleet_page_is_bounded_and_puts_the_worst_stores_first(fleet_tracker):
    _, page, _ = fleet_tracker
    assert len(page) < 200_000, len(page)  # 5,000 stores, yet one screenful per release, not one row per store
    expected_absent = sum(1 for i in range(fleet.STORES) if fleet.cache_absent(i) and not fleet.stalled(i))
    assert f'<span data-state="cache absent"><i class=s-cache-absent></i>cache absent <b>{expected_absent}</b>' in page
    stalled = sorted((i for i in range(fleet.STORES) if fleet.stalled(i)), key=fleet.stalled_for, reverse=True)
    rows = page.split(f'data-release="{fleet.RELEASE}"')[1].split("<table class=worst>")[1]
    order = [row.split('"', 1)[0] for row in rows.split('<tr data-store="')[1:]]
    assert order[:len(stalled)] == [fleet.store_id(i) for i in stalled]  # stalled longest first
    amplified = [fleet.store_id(i) for i in range(fleet.STORES) if fleet.amplified(i) and not fleet.stalled(i)]
    assert set(order[len(stalled):len(stalled) + len(amplified)]) == set(amplified)
    assert all(fleet.cache_absent(int(store[1:])) for store in order[len(stalled) + len(amplified):])
    assert f"{fleet.STORES:,}</b> stores" in page and '<tr data-ring="canary"><td>canary</td><td class=num>50<' in page


@needs_chromium
async def test_dashboard_in_chromium_renders_fast_searches_and_fits(fleet_tracker, artifacts):
    url, _, token = fleet_tracker
    with trio.fail_after(240):
        async with chromium() as tab:
            # Without the token the browser is asked for it (a headless one has nobody to ask): nothing of the fleet.
            await tab.open(url + "/")
            shut = await tab.js("[performance.getEntriesByType('navigation')[0].responseStatus, document.body.innerText]")
            assert shut[0] == 401 and "S0042" not in shut[1], shut
            # The engineer logs in (Basic, the token as password) on a small page of the same tracker; the browser
            # then sends it on every page. Its renderer and connection start there too, so the timings below are
            # the dashboard's, not Chromium's cold start.
            host = url.removeprefix("http://")
            await tab.open(f"http://operator:{quote(token, safe='')}@{host}/stores?q=warm-up")
            assert "no store id contains warm-up" in await tab.js("document.body.innerText")
            for width in WIDTHS:
                await tab.viewport(width, 900)
                await tab.open(url + "/")
                timings = await tab.timings()
                print(f"fleet page at {width} px: {timings}")
                assert 0 < timings["dom_ready"] <= timings["load"] < 1000, timings
                assert await tab.overflow() <= 0, f"the fleet page scrolls sideways at {width} px"
                await tab.screenshot(artifacts / f"fleet-dashboard-{width}.png", width)
            assert await tab.js("document.querySelectorAll('section.release').length") == 2

            # A store id typed in the search box lands on the store's page.
            await tab.viewport(1280, 900)
            await tab.js("document.querySelector('form.search input').value = 's0042';"
                         "document.querySelector('form.search').submit()")
            await tab.loaded()
            assert await tab.js("location.pathname") == "/store/S0042"
            timings = await tab.timings()
            print(f"store page: {timings}")
            assert timings["load"] < 1000, timings
            devices = await tab.js("[...document.querySelectorAll('table.devices tr[data-node]')].map(r => r.dataset.node)")
            assert devices[0] == "cache" and len(devices) == fleet.TILLS + 1
            cache = await tab.js("document.querySelector('table.devices tr[data-node=\"cache\"]').innerText")
            assert cache.split("\t")[3:5] == [f"{fleet.RELEASE}\n{fleet.APP}", "seeding"], cache
            row = await tab.js("document.querySelector('table.devices tr[data-node=\"till-04\"]').innerText")
            assert row.split("\t")[3] == f"{fleet.RELEASE}\n{fleet.APP}", row
            assert await tab.overflow() <= 0
            await tab.screenshot(artifacts / "store-page.png", 1280)

            # A part of an id lists the stores it matches, each a link to its page.
            await tab.open(url + "/stores?q=S004")
            found = await tab.js("[...document.querySelectorAll('ul.found a')].map(a => a.textContent)")
            assert found == [fleet.store_id(i) for i in range(fleet.STORES) if "S004" in fleet.store_id(i)]
            await tab.open(url + "/stores?q=nowhere")
            assert "no store id contains nowhere" in await tab.js("document.body.innerText")

            # A stalled store's page names its stuck tills.
            stuck = fleet.store_id(next(i for i in range(fleet.STORES) if fleet.stalled(i)))
            await tab.open(url + f"/store/{stuck}")
            text = await tab.js("document.querySelector('table.devices').innerText")
            assert text.count(f"stalled on {fleet.RELEASE} at 67 %") == 2
            await tab.screenshot(artifacts / "store-page-stalled.png", 800)
    assert all((artifacts / name).stat().st_size > 10_000 for name in
               ("fleet-dashboard-1280.png", "fleet-dashboard-800.png", "store-page.png", "store-page-stalled.png"))


async def test_unknown_and_hostile_store_ids_get_a_plain_answer(fleet_tracker):
    url, _, token = fleet_tracker
    async with httpx.AsyncClient(base_url=url, timeout=60, auth=("operator", token)) as client:
        missing = await client.get("/store/S9999")
        assert missing.status_code == 404 and "store S9999: no node of this store has announced" in missing.text
        hostile = await client.get("/store/%3Cscript%3Ealert(1)%3C%2Fscript%3E")
        assert hostile.status_code == 404, hostile.text
        assert "<script>" not in hostile.text, hostile.text
        assert "&lt;script&gt;" in hostile.text, hostile.text
        long = await client.get("/stores", params={"q": "S" * 500})
        assert long.status_code == 400 and len(long.text) < 10_000
        empty = await client.get("/stores", params={"q": " "})
        assert empty.status_code == 400
