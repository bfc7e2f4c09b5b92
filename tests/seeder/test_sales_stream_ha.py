"""Two real seeders sharing one real PostgreSQL (HA central), store caches posting to both at once, and the data
platform's consumer (`posswarm-seeder sales stream --follow`) polling one of them all the while: it skips no sale
and takes none twice."""

from __future__ import annotations

import json
import random
import subprocess

import httpx
import pytest
import trio

from posswarm.identity.tls import central_context
from posswarm.storedata import central
from seeder.sales_stream import decode
from tools.bench_sales_ingest import _cache_credential, _sales
from tools.lab import bin_path
from tools.pg_server import server_bin, throwaway_postgres
from tools.sales_rig import Rig

CACHES_EACH, TILLS, SALES_PER_TILL, BATCH = 8, 2, 60, 6
TOKEN = "stream-operator-" + "0123456789abcdef"


async def _set_when_written(out, event: trio.Event) -> None:
    while not out.read_text():
        await trio.sleep(0.02)
    event.set()


async def test_a_consumer_polling_during_two_seeders_commits_skips_nothing(tmp_path):
    pytest.importorskip("psycopg")
    if server_bin() is None:
        pytest.skip("PostgreSQL server binaries are not installed (apt-get install postgresql)")
    rng = random.Random(18)
    token = tmp_path / "operator.token"
    token.write_text(TOKEN)
    rigs = [Rig(tmp_path / name, 0) for name in ("a", "b")]
    out = tmp_path / "platform.jsonl"
    with throwaway_postgres() as dsn:
        try:
            urls = [await rig.start_central(dsn, operator_token_file=token) for rig in rigs]
            consumer = [bin_path("posswarm-seeder"), "sales", "stream", "--central", urls[0], "--cursor-file",
                        str(tmp_path / "cursor"), "--operator-token-file", str(token), "--central-ca",
                        str(rigs[0].central_keys.authority), "--limit", "20"]
            sent, reading = [], trio.Event()

            async def cache(rig: Rig, url: str, store: str) -> None:
                sales = _sales(store, TILLS, SALES_PER_TILL, rng)
                credential = _cache_credential(rig.central_keys, store)
                async with httpx.AsyncClient(verify=central_context(rig.central_keys.authority), timeout=60) as client:
                    for start in range(0, len(sales), BATCH):
                        answer = await central.post_sales(client, url, store, sales[start:start + BATCH], credential)
                        assert answer["stored"] == len(sales[start:start + BATCH]), answer
                        await reading.wait()  # the rest only once the consumer reads: it must poll amid commits
                sent.extend(sales)

            with open(out, "wb") as f:
                follower = await trio.lowlevel.open_process([*consumer, "--follow", "--poll-s", "0.02"], stdout=f,
                                                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
            try:
                with trio.fail_after(180):
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(_set_when_written, out, reading)
                        for index, (rig, url) in enumerate(zip(rigs, urls, strict=True)):
                            for n in range(CACHES_EACH):
                                nursery.start_soon(cache, rig, url, f"S{index}{n:02d}")
                    polled_during = len(out.read_text().splitlines())
                    while len(out.read_text().splitlines()) < len(sent):  # it catches up on its own
                        assert follower.poll() is None, "the consumer stopped"
                        await trio.sleep(0.05)
            finally:
                follower.terminate()
                await follower.wait()
            exported = await rigs[0].export(dsn)
        finally:
            with trio.CancelScope(shield=True):
                for rig in rigs:
                    await rig.stop_all()
    taken = [json.loads(line) for line in out.read_text().splitlines()]
    positions = [decode(r["cursor"]) for r in taken]
    assert positions == sorted(set(positions))
    assert 0 < polled_during < len(sent)  # it read while both seeders still committed
    keys = sorted((r["store"], r["device_id"], r["incarnation"], r["seq"], r["txn"]) for r in taken)
    assert len(keys) == len(set(keys)) == len(exported) == len(sent) == 2 * CACHES_EACH * TILLS * SALES_PER_TILL
    assert keys == sorted((r["store"], r["device_id"], r["incarnation"], r["seq"], r["txn"]) for r in exported)
