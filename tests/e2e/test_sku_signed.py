"""SKU prices are central's alone, with real processes: a seeder, a store cache and a till. A real HTTP proxy
between the cache and central rewrites ``price_cents`` in transit; a store node holding the gossip key pushes
forged prices to the till. Both are refused, counted, and the till keeps selling at central's price; and
central rotates its SKU key without anyone touching a node."""

from __future__ import annotations

import datetime
import sqlite3
from dataclasses import replace
from functools import partial

import httpx
import msgpack
import trio
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from posswarm import http_service
from posswarm.gossip.driver import StoreChannel
from posswarm.gossip.messages import SkuEntries
from posswarm.identity.credential import load_credential
from posswarm.identity.tls import central_context
from posswarm.keys import key_id, load_private_key
from posswarm.sku import snapshot
from posswarm.sku.catalog import bucket_of
from posswarm.sku.entry import SkuEntry
from posswarm.sku.hlc import pack
from posswarm.sku.signature import sign
from posswarm.wallclock import now_ms
from seeder.sku import CentralCatalog
from tools.bench_sku import Replicas, _rows, _storedata
from tools.lab import bin_path
from tools.sales_rig import GOSSIP_PORT, Rig

TILL = "till-01"
PRICE_INDEX = 6  # SkuEntry.to_wire(): code, hlc, origin, deleted, barcode, name, price_cents, ...


class PricingProxy:
    """An on-path attacker between the store and central: relays everything, and while ``rewrite`` is on
    sets every ``price_cents`` in central's SKU pages to 1 cent (the signature bytes left as they came).

    It holds a certificate the store's cache accepts for its address (as a TLS-terminating load balancer
    in front of central would, once compromised): TLS cannot stop it, central's signature must."""

    def __init__(self, upstream: str, rig: Rig) -> None:
        self.upstream, self.rig = upstream, rig
        self.rewrite = False
        self.rewritten = 0
        self.url = ""

    async def run(self, host: str, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        keys = self.rig.central_keys
        cert, key = keys.issue_tls([host], out=self.rig.root / "proxy-tls")
        async with httpx.AsyncClient(timeout=60, verify=central_context(keys.authority)) as client:
            async def relay(request: Request) -> Response:
                try:
                    upstream = await client.request(
                        request.method, f"{self.upstream}{request.url.path}", params=request.query_params,
                        content=await request.body(), headers={"content-type": request.headers.get("content-type", "")})
                except httpx.HTTPError:  # central stopping at the end of the test
                    return Response(status_code=502)
                body = upstream.content
                if request.url.path == "/sku/changes" and self.rewrite and upstream.status_code == 200:
                    page = msgpack.unpackb(body, raw=False)
                    for wire in page["entries"]:
                        wire[PRICE_INDEX] = 1
                        self.rewritten += 1
                    body = msgpack.packb(page)
                return Response(body, status_code=upstream.status_code,
                                media_type=upstream.headers.get("content-type"))

            app = Starlette(routes=[Route("/{path:path}", relay, methods=["GET", "POST"])])
            async with trio.open_nursery() as nursery:
                self.url = await nursery.start(partial(http_service.run, app, host, 0,
                                                       ssl_context=http_service.server_context(cert, key)))
                task_status.started(self)


def _signed_by(rig: Rig, name: str, kid: str) -> int:
    db = sqlite3.connect(f"file:{rig.data_dir(name) / 'sku.sqlite'}?mode=ro", uri=True, timeout=10)
    try:
        return db.execute("SELECT COUNT(*) FROM sku WHERE key_id = ?", (kid,)).fetchone()[0]
    finally:
        db.close()


def _import(rig: Rig, rows: list[dict]) -> None:
    """As `posswarm-seeder sku import` does: its own connection to the file the running seeder signs and serves."""
    catalog = CentralCatalog(str(rig.central_data / "sku.sqlite"))
    try:
        catalog.import_rows(rows)
    finally:
        catalog.close()


async def _until(predicate, what: str, timeout: float = 60.0) -> None:
    with trio.move_on_after(timeout) as waited:
        while not predicate():
            await trio.sleep(0.1)
    assert not waited.cancelled_caught, f"timed out waiting for {what}"


async def test_a_price_rewritten_in_transit_or_forged_over_gossip_is_refused(nursery, tmp_path):
    rig = Rig(tmp_path, 1, sku_poll_s=0.5, catalog_poll_s=1.0, id_suffix="-skusign")
    replicas = Replicas(rig)
    rows = _rows(50)
    try:
        await rig.start_central()
        proxy = await nursery.start(PricingProxy(rig.seeder_url, rig).run, f"127.{rig.net}.0.4")
        rig.seeder_url = proxy.url  # the cache reaches central only through the proxy
        _import(rig, rows)
        await rig.start_store()
        await _until(lambda: replicas.count(TILL) == 50, "the till's catalog")
        good = rows[7]
        assert replicas.price(TILL, good["code"]) == good["price_cents"]

        # 1. The proxy turns a price change into 1 cent on the way to the store: the cache refuses the page,
        #    and the till keeps the price it had; once the path is clean again the real change arrives.
        proxy.rewrite = True
        changed = dict(good, price_cents=777)
        _import(rig, [changed])
        await _until(lambda: _storedata(rig, "cache").get("sku_refused_signature", 0) >= 1, "the cache's refusal")
        assert proxy.rewritten >= 1
        assert replicas.price("cache", good["code"]) == good["price_cents"]
        assert replicas.price(TILL, good["code"]) == good["price_cents"]
        proxy.rewrite = False
        await _until(lambda: replicas.price(TILL, good["code"]) == 777, "central's real price change")

        # 2. A rogue store cache (a stolen cache credential: gossip lets a certified cache send SKU entries) pushes
        #    newer prices: one signed by its own key, one claiming central's key id, one unsigned. The till refuses
        #    all three on central's signature and keeps 777.
        stolen = rig.central_keys.enrol(rig.root / "rogue-cache", node_id="cache-rogue", store=rig.store,
                                        role="cache", device_class="cache")
        authority = x509.load_pem_x509_certificate((stolen / "authority.crt").read_bytes()).public_key()
        credential = load_credential(stolen, (authority,), now=datetime.datetime.now(datetime.UTC))
        rogue = StoreChannel(credential=credential, address=f"127.{rig.net}.1.99")
        await nursery.start(rogue.run)
        till_id = rig.node_id(TILL)
        rogue.add_peer(till_id, rig.address(TILL), GOSSIP_PORT)
        await _until(lambda: till_id in rogue.alive(), "the rogue node's gossip link")
        stamp = pack(now_ms() + 1000)
        forged = SkuEntry(good["code"], stamp, "central", False, good["barcode"], good["name"], 1, "A")
        own_key = sign(forged, Ed25519PrivateKey.generate())
        claimed = replace(own_key, key_id=key_id(load_private_key(rig.central_keys.key("sku")).public_key()))
        assert await rogue.send_wait(till_id, SkuEntries((own_key, claimed, forged)))
        await _until(lambda: _storedata(rig, TILL).get("sku_refused_signature", 0) >= 3, "the till's refusal")
        assert replicas.price(TILL, good["code"]) == 777
        assert "sku.refused_signature" in (rig.logs / f"{TILL}.log").read_text()

        # 2b. The same rogue cache serves a bulk transfer with a catalog snapshot. One it signed itself, vouching
        #     for its own 1-cent prices: refused, and so is every entry it meant to vouch for. Then central's real
        #     snapshot with a bucket the rogue changed (a price, an added SKU): the bucket no longer hashes to
        #     central's digest, so each entry needs its own signature, and the forged ones have none.
        refused = _storedata(rig, TILL)["sku_refused_signature"]
        central_catalog = CentralCatalog(str(rig.central_data / "sku.sqlite"))
        try:
            real = central_catalog.take_snapshot(load_private_key(rig.central_keys.key("sku")))
            bucket = bucket_of(good["code"])
            genuine = central_catalog.replica.entries_in([bucket])
        finally:
            central_catalog.close()
        cheap = [replace(e, price_cents=1, key_id="", signature=b"") for e in genuine]
        fake_code = next(f"FAKE{n}" for n in range(10**6) if bucket_of(f"FAKE{n}") == bucket)
        intruder = SkuEntry(fake_code, real.watermark, "central", False, "", "Free lunch", 1, "A")
        rows_of = sorted(((bucket_of(e.code), e.code, e.leaf) for e in [*cheap, intruder]))
        own = snapshot.sign(snapshot.build(real.watermark, ((b, leaf) for b, _, leaf in rows_of)),
                            Ed25519PrivateKey.generate())
        assert await rogue.send_wait(till_id, SkuEntries(tuple(sorted([*cheap, intruder], key=lambda e: e.code)), own))
        await _until(lambda: _storedata(rig, TILL)["sku_refused_signature"] >= refused + 2, "the forged snapshot refused")
        tampered = [replace(e, price_cents=e.price_cents + 1) if e.code == good["code"] else e for e in genuine]
        refused = _storedata(rig, TILL)["sku_refused_signature"]
        assert await rogue.send_wait(till_id, SkuEntries(tuple(sorted([*tampered, intruder], key=lambda e: e.code)),
                                                         real))
        await _until(lambda: _storedata(rig, TILL)["sku_refused_signature"] >= refused + 1, "the forged bucket refused")
        assert replicas.price(TILL, good["code"]) == 777
        assert replicas.price(TILL, fake_code) is None

        # 3. `keys rotate sku` at central, nothing done on a node: the seeder signs the catalog again with the
        #    new key, the nodes take that key from the rotated root, and a price change still arrives.
        keys = rig.central_keys
        await trio.run_process([bin_path("posswarm-seeder"), "keys", "rotate", "sku", "--keys", str(keys.dir),
                                "--releases", str(rig.root / "central" / "releases")], capture_stdout=True)
        new_key = key_id(load_private_key(keys.key("sku")).public_key())
        _import(rig, [dict(good, price_cents=555)])
        await _until(lambda: replicas.price(TILL, good["code"]) == 555, "a price change signed by the new key", 120)
        await _until(lambda: _signed_by(rig, TILL, new_key) == 50, "the whole catalog re-signed on the till", 120)
    finally:
        replicas.close()
        with trio.CancelScope(shield=True):
            await rig.stop_all()
