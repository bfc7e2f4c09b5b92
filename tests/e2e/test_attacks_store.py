"""Attacks on a store from inside its LAN, against real node processes: a stolen till's credential, a till claiming
to be the cache, a fake cache advert, an uncertified process on the gossip port. Each is refused with one log line,
no sale is lost and the till installs its release."""

from __future__ import annotations

import datetime
import sqlite3
import sys
from functools import partial

import httpx
import trio
from cryptography import x509
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from posswarm import http_service
from posswarm.catalog.store_source import cache_server_context
from posswarm.discovery import mdns
from posswarm.discovery.records import Advert
from posswarm.gossip.driver import StoreChannel
from posswarm.gossip.messages import SalesAck, SalesDigest
from posswarm.identity.credential import load_credential
from tests.posswarm.gossip.certified import Authority
from tools.lab import Lab, LabNode, write_image

GOSSIP_PORT = 7946
STORE_DATA = {"store": {"data": True, "api_port": 0, "gossip_port": GOSSIP_PORT}}
SALE = {"lines": [{"sku": "SKU0001", "qty": 1, "unit_cents": 250}], "tenders": [{"kind": "card", "cents": 250}]}


def _status(lab: Lab, node: LabNode) -> dict:
    return (lab.status_of(node) or {}).get("storedata") or {}


async def _until(predicate, timeout: float, why=lambda: "") -> None:
    with trio.move_on_after(timeout):
        while not predicate():
            await trio.sleep(0.1)
        return
    raise AssertionError(f"not within {timeout} s: {why()}")


def _credential(directory):
    """A credential as its thief holds it (trusting the authority file that came with it)."""
    authority = x509.load_pem_x509_certificate((directory / "authority.crt").read_bytes()).public_key()
    return load_credential(directory, (authority,), now=datetime.datetime.now(datetime.UTC))


def _stolen(lab: Lab, node: LabNode) -> StoreChannel:
    """``node``'s own credential, taken off the till and driven by the attacker's code at the till's address."""
    return StoreChannel(credential=_credential(lab.root / "nodes" / f"{node.name}.identity"), address=node.address,
                        port=GOSSIP_PORT)


def _central_sales(lab: Lab) -> list[tuple]:
    path = lab.root / "central" / "central-data" / "sales.sqlite"
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return db.execute("SELECT device_id, incarnation, seq FROM sale").fetchall()
    except sqlite3.OperationalError:  # not created yet
        return []
    finally:
        db.close()


async def _sell(till: LabNode, count: int) -> list[dict]:
    url = (till.data_dir / "api.url").read_text().strip()
    async with httpx.AsyncClient(timeout=10) as client:
        answers = [await client.post(f"{url}/sales", json=SALE) for _ in range(count)]
    assert all(a.status_code == 201 for a in answers), [a.text for a in answers]
    return [a.json() for a in answers]


def _kinds(channel: StoreChannel) -> set[str]:
    kinds = set()
    while True:
        try:
            kinds.add(channel.inbox.receive_nowait().message.KIND)
        except trio.WouldBlock:
            return kinds


def _log_lines(lab: Lab, node: LabNode, *needles: str) -> list[str]:
    text = (lab.logs / f"{node.name}.log").read_text(errors="replace")
    return [line for line in text.splitlines() if all(n in line for n in needles)]


async def _selling_store(nursery, lab: Lab) -> None:
    """Central and the lab's store, every till talking to the cache over gossip."""
    def hears_cache() -> bool:  # the tills (and so their status files) are up and talk to the cache
        peers = [_status(lab, till).get("gossip", {}).get("peers", {}) for till in lab.devices]
        return all(p.get(lab.cache.node_id, {}).get("alive") for p in peers)

    with trio.fail_after(90):
        await lab.start_central(nursery)
        for node in lab.nodes:
            await lab.start_node(nursery, node, extra=STORE_DATA)
        await _until(hears_cache, 60, lambda: _status(lab, lab.devices[0]))


async def _store(nursery, lab: Lab) -> tuple[LabNode, LabNode]:
    """The lab's store with two tills selling; the second is stolen (its process gone) and the cache is
    rebooting, so the first till's sales wait in its outbox."""
    victim, stolen = lab.devices
    await _selling_store(nursery, lab)
    lab.kill(stolen)
    lab.kill(lab.cache)
    return victim, stolen


async def _everything_reaches_central(nursery, lab: Lab, victim: LabNode, sales: list[dict]) -> None:
    """The cache comes back: every sale the victim made reaches central exactly once, and the victim is settled."""
    await lab.start_node(nursery, lab.cache, extra=STORE_DATA)
    want = sorted((victim.node_id, s["incarnation"], s["seq"]) for s in sales)
    await _until(lambda: sorted(_central_sales(lab)) == want, 60, lambda: _central_sales(lab))
    await _until(lambda: _status(lab, victim).get("sales", {}).get("unacked") == 0, 30, lambda: _status(lab, victim))


async def test_a_stolen_tills_credential_cannot_ack_another_tills_sales(tmp_path):
    lab = Lab(tmp_path, devices=2)
    async with trio.open_nursery() as nursery:
        victim, stolen = await _store(nursery, lab)
        sales = await _sell(victim, 5)
        incarnation = sales[0]["incarnation"]
        thief = _stolen(lab, stolen)
        await nursery.start(thief.run)
        thief.add_peer(victim.node_id, victim.address, GOSSIP_PORT)
        with trio.fail_after(30):
            while not thief.alive():  # the victim talks to it: it is a till of the store, certified
                await trio.sleep(0.1)

        def refused() -> dict:
            return _status(lab, victim).get("refused", {})

        with trio.fail_after(30):  # "the cache has them all": the till would forget them
            while not (refused().get("sales.ack") and refused().get("sales.digest")):
                thief.send(victim.node_id, SalesAck(victim.node_id, incarnation, 5))
                thief.send(victim.node_id, SalesDigest({(victim.node_id, incarnation): 5}))
                await trio.sleep(0.5)
        assert _status(lab, victim)["sales"]["unacked"] == 5
        lines = _log_lines(lab, victim, "storedata.refused", "sales.ack")
        assert len(lines) == 1 and f"from device {stolen.node_id}" in lines[0], lines
        await _everything_reaches_central(nursery, lab, victim, sales)
        nursery.cancel_scope.cancel()


async def test_a_stolen_till_claiming_to_be_the_cache_gets_no_sales(tmp_path):
    lab = Lab(tmp_path, devices=2)
    async with trio.open_nursery() as nursery:
        victim, stolen = await _store(nursery, lab)
        sales = await _sell(victim, 3)
        thief = _stolen(lab, stolen)
        thief.role = "cache"  # every hello and heartbeat it sends now says "I am the cache"
        await nursery.start(thief.run)
        thief.add_peer(victim.node_id, victim.address, GOSSIP_PORT)
        claims = lambda: _status(lab, victim).get("gossip", {}).get("dropped", {}).get("claim", 0)  # noqa: E731
        await _until(lambda: claims() >= 2, 30, lambda: _status(lab, victim))
        gossip = _status(lab, victim)["gossip"]
        assert gossip["peers"].get(stolen.node_id, {}).get("role", "device") == "device", gossip
        told = _kinds(thief)  # the victim may heartbeat it (a certified till), never more
        assert not told & {"sales.push", "sku.digest"}, f"the victim sent the false cache {told}"
        lines = _log_lines(lab, victim, "gossip.refused", f"says it is cache {stolen.node_id}")
        assert len(lines) == 1, lines
        assert _status(lab, victim)["sales"]["unacked"] == 3
        await _everything_reaches_central(nursery, lab, victim, sales)
        nursery.cancel_scope.cancel()


PROBE = """
import socket, ssl, sys
host, port = sys.argv[1], int(sys.argv[2])
# 1. gossip v1 as before: a frame under the store key, on plain TCP
with socket.create_connection((host, port), timeout=10) as s:
    s.sendall(bytes.fromhex(sys.argv[3]))
    s.settimeout(10)
    plain = s.recv(100)
# 2. TLS 1.3 with no certificate of its own
context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
with socket.create_connection((host, port), timeout=10) as raw:
    with context.wrap_socket(raw) as s:
        try:
            s.sendall(b"\\x00\\x00\\x00\\x05hello")
            tls = s.recv(100)
        except (ssl.SSLError, OSError) as exc:
            tls = type(exc).__name__.encode()
print(plain.hex(), tls.decode(errors="replace"))
"""


async def test_an_uncertified_process_on_the_gossip_port_is_refused_after_the_handshake(tmp_path):
    lab = Lab(tmp_path, devices=2)
    async with trio.open_nursery() as nursery:
        victim, _ = await _store(nursery, lab)
        # What someone holding the old store key would send: a length, an envelope, a tag.
        frame = b"\x96\x01" + lab.store.encode() + bytes(48)
        done = await trio.run_process(
            [sys.executable, "-c", PROBE, victim.address, str(GOSSIP_PORT), (len(frame).to_bytes(4, "big") + frame).hex()],
            capture_stdout=True, capture_stderr=True)
        assert done.returncode == 0, done.stderr
        plain, tls = done.stdout.decode().split(" ", 1)
        assert plain == "", "the till answered plain TCP"  # closed without a byte back
        assert "SSL" in tls or tls.strip() == "", tls  # the till closed the TLS connection it would not trust
        refused = lambda: _status(lab, victim).get("gossip", {}).get("refused", {})  # noqa: E731
        await _until(lambda: refused().get("tls", 0) >= 2, 20, lambda: _status(lab, victim))
        lines = _log_lines(lab, victim, "gossip.refused", "TLS handshake failed")
        assert len(lines) == 1, lines  # one line for this address, not one per attempt
        sales = await _sell(victim, 2)  # the till sells on
        await _everything_reaches_central(nursery, lab, victim, sales)
        nursery.cancel_scope.cancel()


class StrippedCache:
    """Where a fake cache advert points: HTTPS with some certificate, relaying central with ``/catalog`` stripped of
    its rollout sequences (a paused or revoked release would look "active, ring all"); counts the requests it gets."""

    def __init__(self, upstream: str) -> None:
        self.upstream, self.requests, self.port = upstream, 0, 0

    async def run(self, host: str, context, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with httpx.AsyncClient(timeout=10) as client:
            async def any_path(request: Request) -> Response:
                self.requests += 1
                upstream = await client.get(f"{self.upstream}{request.url.path}")
                if request.url.path == "/catalog" and upstream.status_code == 200:
                    doc = upstream.json()
                    for entry in doc["releases"]:
                        entry.pop("rollout_sequence", None)
                    return JSONResponse(doc)
                return Response(upstream.content, upstream.status_code)

            app = Starlette(routes=[Route("/{path:path}", any_path)])
            async with trio.open_nursery() as nursery:
                url = await nursery.start(partial(http_service.run, app, host, 0, ssl_context=context))
                self.port = int(url.rsplit(":", 1)[1])
                task_status.started(self)


async def _drain(receive) -> None:
    async for _ in receive:
        pass


async def test_a_fake_cache_advert_without_a_cache_certificate_is_never_a_fresh_tills_catalog_source(tmp_path):
    lab = Lab(tmp_path, devices=1)
    till = lab.devices[0]
    # Another central's certificate, and a stolen till's real one: neither is a cache of this store.
    foreign = Authority(tmp_path / "elsewhere").credential(f"cache-{lab.store[-4:]}", "cache", lab.store)
    stolen = _credential(lab.central_keys.enrol(tmp_path / "stolen", node_id=f"till-77-{lab.store[-4:]}",
                                                store=lab.store, role="device", device_class="pos"))
    fakes = []
    async with trio.open_nursery() as nursery:
        send, receive = trio.open_memory_channel(100)
        nursery.start_soon(_drain, receive)
        with trio.fail_after(90):
            await lab.start_central(nursery)
            for octet, credential in ((250, foreign), (251, stolen)):
                host = f"127.{lab.net}.1.{octet}"
                fake = await nursery.start(StrippedCache(lab.seeder_url).run, host, cache_server_context(credential))
                fakes.append(fake)
                await nursery.start(mdns.run, Advert(f"cache-fake{octet}-{lab.store[-4:]}", lab.store, "cache", "cache",
                                                     host, bt_port=1, http_port=fake.port), send)
            await lab.start_node(nursery, till)  # freshly imaged: it hears the fakes before the real cache
            await lab.start_node(nursery, lab.cache)
        await lab.publish(write_image(tmp_path / "image.bin", 2), "1.0")
        with trio.fail_after(120):
            await lab.wait_installed("pos-image", "1.0")
        doc = lab.status_of(till)
        port = int(lab.status_of(lab.cache)["http_url"].rsplit(":", 1)[1])
        assert doc["catalog"]["url"] == f"https://{lab.cache.address}:{port}", doc["catalog"]
        assert [fake.requests for fake in fakes] == [0, 0], "a fake cache was asked for something"
        text = (lab.logs / f"{till.name}.log").read_text()
        refusals = [line for line in text.splitlines() if "catalog.source_refused" in line]
        assert len(refusals) == 2, refusals  # one line each, however often the till polls
        assert any("not issued by our enrolment authority" in line for line in refusals), refusals
        assert any(f"device {stolen.identity.node_id}" in line and "not a cache" in line for line in refusals)
        nursery.cancel_scope.cancel()
