"""Central's group commit against a real seeder process: many certified caches at once, central SIGKILLed while
they send and started again; every sale lands exactly once and none acknowledged before the kill is missing."""

from __future__ import annotations

import random

import httpx
import pytest
import trio

from posswarm.errors import PosswarmError
from posswarm.identity.tls import central_context
from posswarm.storedata import central
from tools.bench_sales_ingest import _attempted, _cache_credential, _sales
from tools.pg_server import server_bin, throwaway_postgres
from tools.sales_rig import Rig
from tools.sales_verdict import verdict

CACHES, TILLS, SALES_PER_TILL, BATCH = 40, 2, 20, 10


def _url(rig: Rig) -> str:
    """The URL of central's latest start (it listens on a new port each time)."""
    text = (rig.logs / "seeder.log").read_text()
    return text.rsplit("event='listening'", 1)[1].split("url='", 1)[1].split("'", 1)[0]


async def _through_a_kill(root, sales_db: str = "") -> None:
    rng = random.Random(17)
    rig = Rig(root, 0)
    stores = {f"S{i:03d}": _sales(f"S{i:03d}", TILLS, SALES_PER_TILL, rng) for i in range(CACHES)}
    total = CACHES * TILLS * SALES_PER_TILL
    acked: set[str] = set()
    stored = [0]
    halfway, restarted = trio.Event(), trio.Event()
    try:
        where = [await rig.start_central(sales_db)]
        tls = central_context(rig.central_keys.authority)
        credentials = {store: _cache_credential(rig.central_keys, store) for store in stores}

        async def cache(store: str) -> None:
            async with httpx.AsyncClient(verify=tls, timeout=30.0) as client:
                sales = stores[store]
                for start in range(0, len(sales), BATCH):
                    chunk = sales[start:start + BATCH]
                    while True:
                        try:
                            answer = await central.post_sales(client, where[0], store, chunk, credentials[store])
                            break
                        except PosswarmError:  # central is down, or cut this attempt off: as a cache, again
                            await trio.sleep(0.1)
                    assert answer["stored"] + answer["duplicates"] == len(chunk), answer
                    stored[0] += answer["stored"]
                    acked.update(sale.txn for sale in chunk)
                    if len(acked) >= total // 2:
                        halfway.set()

        async def kill_and_restart() -> None:
            await halfway.wait()
            await rig.kill("seeder")
            before = set(acked)
            await rig.start("seeder")
            exported = {row["txn"] for row in await rig.export(sales_db)}
            assert before <= exported, f"{len(before - exported)} sales acknowledged before the kill are missing"
            where[0] = _url(rig)
            restarted.set()

        with trio.fail_after(240):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(kill_and_restart)
                for store in stores:
                    nursery.start_soon(cache, store)
        assert restarted.is_set()
        exported = await rig.export(sales_db)
    finally:
        with trio.CancelScope(shield=True):
            await rig.stop_all()
    found = verdict(_attempted([sale for sales in stores.values() for sale in sales]), exported)
    assert (found["stored"], found["lost"], found["duplicated"], found["phantom"]) == (total, 0, 0, 0), found
    # A batch committed but not answered before the kill is counted as duplicates when resent, never stored twice.
    assert 0 < stored[0] <= total


async def test_many_caches_at_once_through_a_central_kill_into_sqlite(tmp_path):
    await _through_a_kill(tmp_path)


async def test_many_caches_at_once_through_a_central_kill_into_postgresql(tmp_path):
    pytest.importorskip("psycopg")
    if server_bin() is None:
        pytest.skip("PostgreSQL server binaries are not installed (apt-get install postgresql)")
    with throwaway_postgres() as dsn:
        await _through_a_kill(tmp_path, dsn)
