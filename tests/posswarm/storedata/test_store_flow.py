"""Store data end to end in one trio run: real gossip over mutual TLS, real SQLite, central's real HTTP routes."""

from __future__ import annotations

import datetime
import inspect
from pathlib import Path

import httpx
import msgpack
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from posswarm import http_service
from posswarm.gossip.driver import StoreChannel
from posswarm.gossip.messages import SalesAck, SalesPush
from posswarm.identity.credential import load_credential
from posswarm.keys import KeyRing, generate_keypair, load_private_key
from posswarm.sku.catalog import SkuReplica
from posswarm.sku.entry import SkuEntry
from posswarm.storedata.api import local_app
from posswarm.storedata.cache import CacheData
from posswarm.storedata.device import DeviceData
from seeder import sales, sku
from seeder.sales_writer import SalesWriter
from tests.posswarm.gossip.certified import Authority
from tests.posswarm.test_identity import credential_in

STORE = "S042"
KEYS = KeyRing([])  # the root's SKU keys as the nodes hold them: the test's Central puts its key here
_AUTHORITIES: dict[Path, Authority] = {}


async def _until(predicate, timeout: float = 15.0) -> None:
    """Wait until ``predicate()`` (sync or async) is true."""
    with trio.fail_after(timeout):
        while True:
            result = predicate()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return
            await trio.sleep(0.05)


async def _counts(device: DeviceData) -> dict:
    return (await device.status())["sales"]


class Central:
    def __init__(self, root: Path) -> None:
        self.sales = sales.open_sales(str(root / "central" / "sales.sqlite"))
        self.sales_writer = SalesWriter(self.sales)
        self.catalog = sku.CentralCatalog(str(root / "central" / "sku.sqlite"))
        self.enrolment_key = Ed25519PrivateKey.generate()  # enrols the cache; central takes sales only from it
        self.cache_credential = load_credential(
            credential_in(root, self.enrolment_key, node_id="cache", store=STORE, role="cache"),
            (self.enrolment_key.public_key(),), now=datetime.datetime.now(datetime.UTC))
        self.app = Starlette(routes=sales.routes(self.sales_writer, lambda: [self.enrolment_key.public_key()],
                                                 sales.operator_gate(None))
                             + sku.routes(self.catalog))
        self.sku_key = generate_keypair(root / "central-keys", "sku")[0]
        KEYS.replace([load_private_key(self.sku_key).public_key()])

    def import_rows(self, rows: list[dict], **kwargs) -> dict:
        """As `posswarm-seeder sku import` does it: its own connection to the file the running seeder serves."""
        return self._on_own_connection(lambda catalog: catalog.import_rows(rows, **kwargs))

    def digests(self) -> list[bytes]:
        """The bucket digests of a replica holding exactly central's entries (central keeps none itself)."""
        entries = self._on_own_connection(lambda catalog: catalog.replica.changes_since(0, 1 << 62))
        replica = SkuReplica(":memory:")
        replica.apply(entries)
        return replica.bucket_digests()

    def _on_own_connection(self, fn):
        catalog = sku.CentralCatalog(self.catalog.replica.path)
        try:
            return fn(catalog)
        finally:
            catalog.close()

    async def start(self, nursery, app=None) -> str:
        """Central's signer and HTTP routes (``app`` in place of the real one); returns its URL."""
        await nursery.start(sku.sign_forever, self.catalog, self.sku_key)
        await nursery.start(self.sales_writer.run)
        return await nursery.start(http_service.run, app or self.app, "127.0.0.1", 0)


def _channel(root: Path, node: str, role: str) -> StoreChannel:
    """``node``'s channel, with a certificate from the one enrolment authority of the test (``root``)."""
    if root not in _AUTHORITIES:
        _AUTHORITIES[root] = Authority(root / "enrolment")
    return _AUTHORITIES[root].channel(node, role)


async def _start_cache(nursery, root: Path, url: str, central: Central) -> tuple[CacheData, trio.CancelScope]:
    channel = _channel(root, "cache", "cache")
    cache = CacheData(channel, ledger_path=str(root / "cache-ledger.sqlite"), sku_path=str(root / "cache-sku.sqlite"),
                      store=STORE, central_url=url, sku_poll_s=0.2, sku_keys=KEYS, credential=central.cache_credential)
    scope = trio.CancelScope()

    async def run(task_status=trio.TASK_STATUS_IGNORED):
        with scope:
            async with trio.open_nursery() as inner:
                await inner.start(channel.run)
                await inner.start(cache.run)
                task_status.started()

    await nursery.start(run)
    return cache, scope


async def _start_device(nursery, root: Path, node: str, cache_port: int | None) -> tuple[DeviceData, trio.CancelScope]:
    channel = _channel(root, node, "device")
    device = DeviceData(channel, outbox_path=str(root / f"{node}-outbox.sqlite"), sku_path=str(root / f"{node}-sku.sqlite"),
                        device_id=node, sku_keys=KEYS)
    scope = trio.CancelScope()

    async def run(task_status=trio.TASK_STATUS_IGNORED):
        with scope:
            async with trio.open_nursery() as inner:
                await inner.start(channel.run)
                await inner.start(device.run)
                task_status.started()

    await nursery.start(run)
    if cache_port:
        channel.add_peer("cache", "127.0.0.1", cache_port)
    return device, scope


def _csv(path: Path, rows: list[tuple]) -> Path:
    path.write_text("code,barcode,name,price_cents,tax_class\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
    return path


async def test_catalog_out_sales_back_exactly_once(nursery, tmp_path):
    central = Central(tmp_path)
    url = await central.start(nursery)
    rows = [(f"SKU{i:04d}", f"40000000{i:05d}", f"item {i}", 100 + i, "A") for i in range(300)]
    central.import_rows(sku.read_csv(_csv(tmp_path / "cat.csv", rows)))

    cache, _ = await _start_cache(nursery, tmp_path, url, central)
    tills = [(await _start_device(nursery, tmp_path, f"till-{i}", cache.channel.port))[0] for i in (1, 2)]

    async def everyone_has_catalog():
        found = [await t.lookup("4000000000299") for t in tills]
        return all(e is not None and e.price_cents == 399 for e in found)

    await _until(everyone_has_catalog)

    # A price change and a deletion at central reach every till (pushed, and by anti-entropy).
    changed = [r if r[0] != "SKU0007" else ("SKU0007", r[1], r[2], 999, "B") for r in rows if r[0] != "SKU0008"]
    result = central.import_rows(sku.read_csv(_csv(tmp_path / "cat2.csv", changed)), replace=True)
    assert result["changed"] == 2 and result["tombstoned_missing"] == 1

    async def change_arrived():
        entries = [(await t.lookup("SKU0007"), await t.lookup("SKU0008")) for t in tills]
        return all(a is not None and a.price_cents == 999 and b is None for a, b in entries)

    await _until(change_arrived)

    recorded = []
    for n in range(20):
        till = tills[n % 2]
        recorded.append((await till.record([("SKU0001", 2, 101), ("SKU0007", 1, 999)], [("card", 1201)])).sale)

    await _until(lambda: central.sales.totals() == (20, 20 * 1201))
    # Nothing left un-acked on the tills, and the cache's aggregates match.
    async def all_acked():
        return all([(await _counts(t))["unacked"] == 0 for t in tills])

    await _until(all_acked)
    totals = await cache._sales_db.run(cache.ledger.totals)
    assert totals.sales == 20 and totals.cents == 20 * 1201
    assert sum(qty for (day, code), (qty, _) in totals.by_day_sku.items() if code == "SKU0001") == 40
    cache_api = await nursery.start(http_service.run, local_app(cache), "127.0.0.1", 0)
    async with httpx.AsyncClient(base_url=cache_api) as client:
        days = (await client.get("/sales/days")).json()
        assert {row["sku"]: row["qty"] for row in days} == {"SKU0001": 40, "SKU0007": 20}
        assert (await client.post("/sales", json={"lines": []})).status_code == 404  # the cache sells nothing
    exported = sorted((s.device_id, s.seq) for _, s in central.sales.rows())
    assert exported == sorted((s.device_id, s.seq) for s in recorded)


async def test_a_stolen_tills_credential_can_neither_ack_nor_push_another_tills_sales(nursery, tmp_path):
    central = Central(tmp_path)
    url = await central.start(nursery)
    cache, _ = await _start_cache(nursery, tmp_path, url, central)
    victim, _ = await _start_device(nursery, tmp_path, "till-1", None)
    thief = _channel(tmp_path, "till-2", "device")  # till-2's real credential, driven by hand
    await nursery.start(thief.run)
    victim.channel.add_peer("till-2", "127.0.0.1", thief.port)
    await _until(lambda: thief.alive() == ["till-1"] and victim.channel.alive() == ["till-2"])
    sales_made = [(await victim.record([("SKU1", 1, 250)], [("cash", 250)])).sale for _ in range(3)]
    # The thief acks them all for the victim, as a cache would: the victim must keep every one.
    assert thief.send("till-1", SalesAck("till-1", sales_made[0].incarnation, 3))
    await _until(lambda: victim.refused["sales.ack"] >= 1)
    assert (await _counts(victim))["unacked"] == 3
    # And pushes forged sales in the victim's name to the cache, with one of its own.
    thief.add_peer("cache", "127.0.0.1", cache.channel.port)
    await _until(lambda: thief.alive("cache") == ["cache"])
    own = type(sales_made[0])("till-2", "cd" * 16, 1, sales_made[0].created_ms, sales_made[0].lines,
                              sales_made[0].total_cents, sales_made[0].tenders)
    forged = type(sales_made[0])("till-1", sales_made[0].incarnation, 9, sales_made[0].created_ms,
                                 sales_made[0].lines, 250, sales_made[0].tenders)
    assert thief.send("cache", SalesPush((forged, own)))
    await _until(lambda: cache.refused["sales.push"] >= 1)
    # The real cache comes into view: every real sale arrives once, the forged one never, the thief's own does.
    victim.channel.add_peer("cache", "127.0.0.1", cache.channel.port)
    await _until(lambda: central.sales.totals() == (4, 1000))
    assert sorted((s.device_id, s.seq) for _, s in central.sales.rows()) == [("till-1", 1), ("till-1", 2),
                                                                            ("till-1", 3), ("till-2", 1)]

    async def victim_settled():
        return (await _counts(victim))["unacked"] == 0

    await _until(victim_settled)


async def test_local_api_commits_before_answering(nursery, tmp_path):
    till, _ = await _start_device(nursery, tmp_path, "till-1", None)
    api = await nursery.start(http_service.run, local_app(till), "127.0.0.1", 0)
    async with httpx.AsyncClient(base_url=api) as client:
        ok = await client.post("/sales", json={"lines": [{"sku": "SKU1", "qty": 3, "unit_cents": 50}]})
        assert ok.status_code == 201 and ok.json()["total_cents"] == 150 and ok.json()["seq"] == 1
        # Answered means committed: a fresh connection to the file sees it.
        from posswarm.sales.outbox import Outbox

        other = Outbox(str(tmp_path / "till-1-outbox.sqlite"), "till-1")
        assert other.last().seq == 1 and other.last().tenders[0].kind == "cash"
        other.close()
        bad = await client.post("/sales", json={"lines": [{"sku": "SKU1", "qty": 0, "unit_cents": 50}]})
        assert bad.status_code == 400 and "quantity" in bad.json()["error"]
        bad_json = await client.post("/sales", content=b"{nope", headers={"content-type": "application/json"})
        assert bad_json.status_code == 400 and "not JSON" in bad_json.json()["error"]
        assert (await client.get("/sales/last")).json()["seq"] == 1
        assert (await client.get("/sku/NOPE")).status_code == 404


async def test_shell_commands_use_the_local_api(nursery, tmp_path, capsys):
    from posswarm import cli

    till, _ = await _start_device(nursery, tmp_path, "till-1", None)
    await till._sku_db.run(till.replica.apply, [SkuEntry("SKU1", 1 << 20, "central", barcode="400", price_cents=150)])
    api = await nursery.start(http_service.run, local_app(till), "127.0.0.1", 0)
    code = await trio.to_thread.run_sync(cli.main, ["sale", "record", "--api", api, "--line", "SKU1:2:150",
                                                    "--tender", "card:300"])
    assert code == 0
    assert '"total_cents": 300' in capsys.readouterr().out
    assert await trio.to_thread.run_sync(cli.main, ["sku", "get", "400", "--api", api]) == 0
    assert '"code": "SKU1"' in capsys.readouterr().out
    assert await trio.to_thread.run_sync(cli.main, ["sku", "get", "nope/x", "--api", api]) == 1
    assert await trio.to_thread.run_sync(cli.main, ["sale", "record", "--api", api, "--line", "SKU1:2"]) == 1
    assert "SKU:QTY:UNIT_CENTS" in capsys.readouterr().err


async def test_cache_keeps_sales_while_central_is_down_then_forwards_each_once(nursery, tmp_path):
    central = Central(tmp_path)
    down = True
    ingest = next(r for r in central.app.routes if r.path == "/sales/ingest").endpoint

    async def flaky_ingest(request):
        if down:
            return JSONResponse({"error": "maintenance"}, 503)
        return await ingest(request)

    app = Starlette(routes=[Route("/sales/ingest", flaky_ingest, methods=["POST"]), *sku.routes(central.catalog)])
    url = await central.start(nursery, app)
    cache, _ = await _start_cache(nursery, tmp_path, url, central)
    till, _ = await _start_device(nursery, tmp_path, "till-1", cache.channel.port)
    for _ in range(30):
        await till.record([("SKU1", 1, 100)], [("cash", 100)])
    async def held_at_cache():
        return cache.central_error is not None and (await cache.status())["sales"]["stored"] == 30

    await _until(held_at_cache)
    assert central.sales.totals() == (0, 0)
    down = False
    await _until(lambda: central.sales.totals() == (30, 3000))
    await _until(lambda: cache.central_error is None)
    assert (await cache.status())["sales"]["unforwarded"] == 0


async def test_a_till_that_was_off_catches_up_by_anti_entropy(nursery, tmp_path):
    central = Central(tmp_path)
    url = await central.start(nursery)
    rows = [(f"SKU{i:04d}", f"5{i:05d}", f"item {i}", 100 + i, "A") for i in range(500)]
    central.import_rows(sku.read_csv(_csv(tmp_path / "a.csv", rows)))
    cache, _ = await _start_cache(nursery, tmp_path, url, central)
    till, scope = await _start_device(nursery, tmp_path, "till-1", cache.channel.port)

    async def till_root_is(expected):
        return await till._sku_db.run(till.replica.bucket_digests) == expected

    async def cache_root_is_central():
        return await cache._sku_db.run(cache.replica.bucket_digests) == central.digests()

    await _until(lambda: till_root_is(central.digests()))
    scope.cancel()  # the till is switched off for the night ...
    changed = [(c, b, n, p * 2, t) for c, b, n, p, t in rows[:300]]  # 300 repriced, 200 gone
    central.import_rows(sku.read_csv(_csv(tmp_path / "b.csv", changed)), replace=True)
    await _until(cache_root_is_central)
    till, _ = await _start_device(nursery, tmp_path, "till-1", cache.channel.port)  # ... and back, same files
    await _until(lambda: till_root_is(central.digests()))
    assert (await till.lookup("SKU0299")).price_cents == 2 * 399 and await till.lookup("SKU0300") is None


async def test_a_batch_central_refuses_stays_at_the_cache_until_its_credential_is_fixed(nursery, tmp_path):
    central = Central(tmp_path)
    url = await central.start(nursery)
    cache, _ = await _start_cache(nursery, tmp_path, url, central)
    right = cache.credential
    # Enrolled for another store by mistake: central refuses every batch it signs.
    cache.credential = load_credential(
        credential_in(tmp_path / "wrong", central.enrolment_key, node_id="cache", store="S043", role="cache"),
        (central.enrolment_key.public_key(),), now=datetime.datetime.now(datetime.UTC))
    till, _ = await _start_device(nursery, tmp_path, "till-1", cache.channel.port)
    for _ in range(3):
        await till.record([("SKU1", 1, 100)], [("cash", 100)])

    async def refused_and_kept():
        error = cache.central_error or ""
        return "refused" in error and "store S043" in error and (await cache.status())["sales"]["unforwarded"] == 3

    await _until(refused_and_kept)
    assert central.sales.totals() == (0, 0)
    cache.credential = right  # re-enrolled: the next retry goes through, nothing was dropped
    await _until(lambda: central.sales.totals() == (3, 300), timeout=90)

    async def all_forwarded():  # the cache marks them once central's answer is in: a moment after central stored them
        return (await cache.status())["sales"]["unforwarded"] == 0

    await _until(all_forwarded)


async def _snapshot_of_all(central: Central, count: int) -> int:
    """Wait for central's signed snapshot to cover ``count`` entries; its watermark."""
    await _until(lambda: central.catalog.snapshot is not None
                 and central._on_own_connection(lambda c: len(c.replica.changes_since(
                     0, 1 << 62, signed_only=True))) == count
                 and central.catalog.snapshot.watermark == central._on_own_connection(lambda c: c.replica.max_hlc()))
    return central.catalog.snapshot.watermark


async def test_a_fresh_cache_fills_by_the_snapshots_whole_buckets_then_follows_changes(nursery, tmp_path, monkeypatch):
    monkeypatch.setattr(sku, "PAGE", 200)  # 1,000 SKUs are then five pages: far behind
    central = Central(tmp_path)
    url = await central.start(nursery)
    rows = [(f"SKU{i:04d}", f"5{i:05d}", f"item {i}", 100 + i, "A") for i in range(1000)]
    central.import_rows(sku.read_csv(_csv(tmp_path / "a.csv", rows)))
    watermark = await _snapshot_of_all(central, 1000)
    cache, _ = await _start_cache(nursery, tmp_path, url, central)

    async def cache_holds_central():
        return await cache._sku_db.run(cache.replica.bucket_digests) == central.digests()

    await _until(cache_holds_central)
    status = await cache.status()
    assert status["sku_vouched_by_snapshot"] == 1000 and status["sku_refused_signature"] == 0
    assert await cache._sku_db.run(cache.replica.cursor) >= watermark
    central.import_rows([{"code": "SKU0007", "barcode": "500007", "name": "item 7", "price_cents": 999,
                          "tax_class": "A", "deleted": False, "line": 2}])
    await _until(lambda: cache.lookup("SKU0007"))
    await _until(cache_holds_central)  # the change after the snapshot came by the cursor, from its watermark on
    assert (await cache.lookup("SKU0007")).price_cents == 999


async def test_a_bucket_page_changed_on_the_way_is_refused_and_the_catalog_still_arrives(nursery, tmp_path,
                                                                                         monkeypatch):
    monkeypatch.setattr(sku, "PAGE", 200)
    central = Central(tmp_path)
    forged = []

    async def tampered_buckets(request):  # an on-path rewriter of the bucket pages, the change pages left alone
        page = central.catalog.bucket_page(int(request.query_params["from"]), int(request.query_params["watermark"]))
        if page["entries"]:
            page["entries"][0][6] = 1  # price_cents: the bucket no longer hashes, nor the entry's signature holds
            forged.append(page["entries"][0][0])
        return Response(msgpack.packb(page), media_type="application/msgpack")

    app = Starlette(routes=[Route("/sku/buckets", tampered_buckets)] + sku.routes(central.catalog))
    url = await central.start(nursery, app)
    rows = [(f"SKU{i:04d}", f"5{i:05d}", f"item {i}", 100 + i, "A") for i in range(1000)]
    central.import_rows(sku.read_csv(_csv(tmp_path / "a.csv", rows)))
    await _snapshot_of_all(central, 1000)
    cache, _ = await _start_cache(nursery, tmp_path, url, central)

    async def cache_holds_central():
        return await cache._sku_db.run(cache.replica.bucket_digests) == central.digests()

    await _until(cache_holds_central)
    status = await cache.status()
    assert forged and status["sku_refused_signature"] >= 1
    assert (await cache.lookup(forged[0])).price_cents != 1
