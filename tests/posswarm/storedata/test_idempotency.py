"""POST /sales with an Idempotency-Key over a real socket: one sale per POS transaction, across a restart."""

from __future__ import annotations

import httpx
import trio

from posswarm import http_service
from posswarm.storedata.api import local_app
from posswarm.storedata.device import DeviceData
from tests.posswarm.gossip.certified import Authority

BASKET = {"lines": [{"sku": "SKU1", "qty": 2, "unit_cents": 150}], "tenders": [{"kind": "card", "cents": 300}]}


async def _till(nursery, tmp_path) -> tuple[str, trio.CancelScope]:
    """A till's store data and local API on real files and a real socket; cancel the scope to stop it."""
    scope = trio.CancelScope()

    async def run(task_status=trio.TASK_STATUS_IGNORED):
        with scope:
            async with trio.open_nursery() as inner:
                channel = Authority(tmp_path / "enrolment").channel("till-1")
                await inner.start(channel.run)
                device = DeviceData(channel, outbox_path=str(tmp_path / "outbox.sqlite"),
                                    sku_path=str(tmp_path / "sku.sqlite"), device_id="till-1")
                await inner.start(device.run)
                task_status.started(await inner.start(http_service.run, local_app(device), "127.0.0.1", 0))

    return await nursery.start(run), scope


async def test_same_key_same_body_is_the_original_sale_different_body_is_409(nursery, tmp_path):
    url, scope = await _till(nursery, tmp_path)
    key = {"Idempotency-Key": "POS7-000123"}
    async with httpx.AsyncClient(base_url=url) as client:
        first = await client.post("/sales", json=BASKET, headers=key)
        assert first.status_code == 201 and first.json()["repeat"] is False and first.json()["txn"] == "POS7-000123"
        again = await client.post("/sales", json=BASKET, headers=key)
        assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
        assert again.json() == {**first.json(), "repeat": True}
        other = await client.post("/sales", json={"lines": [{"sku": "SKU1", "qty": 3, "unit_cents": 150}]}, headers=key)
        assert other.status_code == 409
        assert "already recorded as sale 1" in other.json()["error"] and "\n" not in other.json()["error"]
        bad = await client.post("/sales", json=BASKET, headers={"Idempotency-Key": "x" * 65})
        assert bad.status_code == 400 and "transaction id" in bad.json()["error"]
        assert (await client.get("/storedata")).json()["sales"]["committed"] == 1
    scope.cancel()

    url, _ = await _till(nursery, tmp_path)  # the till restarts on the same files
    async with httpx.AsyncClient(base_url=url) as client:
        after = await client.post("/sales", json=BASKET, headers=key)
        assert after.status_code == 200 and after.json() == {**first.json(), "repeat": True}
        fresh = await client.post("/sales", json=BASKET, headers={"Idempotency-Key": "POS7-000124"})
        assert fresh.status_code == 201 and fresh.json()["seq"] == 2


async def test_the_shell_command_passes_the_txn(nursery, tmp_path, capsys):
    from posswarm import cli

    url, _ = await _till(nursery, tmp_path)
    argv = ["sale", "record", "--api", url, "--line", "SKU1:2:150", "--tender", "card:300", "--txn", "POS7-9"]
    assert await trio.to_thread.run_sync(cli.main, argv) == 0
    assert '"repeat": false' in capsys.readouterr().out
    assert await trio.to_thread.run_sync(cli.main, argv) == 0
    out = capsys.readouterr().out
    assert '"repeat": true' in out and '"seq": 1' in out and '"txn": "POS7-9"' in out
    assert await trio.to_thread.run_sync(cli.main, [*argv[:-1], "no spaces please"]) == 1
    assert "--txn" in capsys.readouterr().err


async def test_concurrent_retries_with_one_key_record_one_sale(nursery, tmp_path):
    url, _ = await _till(nursery, tmp_path)
    answers: list[httpx.Response] = []
    async with httpx.AsyncClient(base_url=url) as client:

        async def post() -> None:
            answers.append(await client.post("/sales", json=BASKET, headers={"Idempotency-Key": "POS7-55"}))

        async with trio.open_nursery() as posts:  # a POS that retries before the first answer came back
            for _ in range(6):
                posts.start_soon(post)
        assert sorted(a.status_code for a in answers) == [200] * 5 + [201]
        assert {a.json()["seq"] for a in answers} == {1}
        assert (await client.get("/storedata")).json()["sales"]["committed"] == 1
