"""Attacks on a store from inside its LAN, against real node processes: a stolen till's credential, a till claiming
to be the cache, a fake cache advert, an uncertified process on the gossip port. Each is refused with one log line,
no sale is lost and the till installs its release."""

from __future__ import annotations

import datetime
import json
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
from tools.lab import Lab, write_image
from tools.sales_rig import GOSSIP_PORT, Rig, central_sales

SALE = {"lines": [{"sku": "SKU0001", "qty": 1, "unit_cents": 250}], "tenders": [{"kind": "card", "cents": 250}]}


def _status(rig: Rig, name: str) -> dict:
    try:
        return json.loads((rig.data_dir(name) / "status.json").read_text())["storedata"] or {}
    except (OSError, ValueError, KeyError):
        return {}


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


def _stolen(rig: Rig, name: str) -> StoreChannel:
    """``name``'s own credential, taken off the till and driven by the attacker's code at the till's address."""
    return StoreChannel(credential=_credential(rig.root / "nodes" / f"{name}.identity"), address=rig.address(name),
                        port=GOSSIP_PORT)


async def _sell(rig: Rig, till: str, count: int) -> list[dict]:
    async with httpx.AsyncClient(timeout=10) as client:
        answers = [await client.post(f"{rig.api_url(till)}/sales", json=SALE) for _ in range(count)]
    assert all(a.status_code == 201 for a in answers), [a.text for a in answers]
    return [a.json() for a in answers]


def _kinds(channel: StoreChannel) -> set[str]:
    kinds = set()
    while True:
        try:
            kinds.add(channel.inbox.receive_nowait().message.KIND)
        except trio.WouldBlock:
            return kinds


def _log_lines(rig: Rig, name: str, *needles: str) -> list[str]:
    text = (rig.logs / f"{name}.log").read_text(errors="replace")
    return [line for line in text.splitlines() if all(n in line for n in needles)]


async def _store(rig: Rig) -> tuple[str, str]:
    """The rig's store with two tills; the second is stolen (its process gone) and the cache is rebooting, so the
    first till's sales wait in its outbox."""
    with trio.fail_after(120):
        await rig.start_all()
        await rig.wait_connected()
    victim, stolen = rig.device_names
    await rig.kill(stolen)
    await rig.kill("cache")
    return victim, stolen


async def _everything_reaches_central(rig: Rig, victim: str, sales: list[dict]) -> None:
    """The cache comes back: every sale the victim made reaches central exactly once, and the victim is settled."""
    await rig.start("cache")
    want = sorted((victim, s["incarnation"], s["seq"]) for s in sales)
    await _until(lambda: sorted(r[:3] for r in central_sales(rig)) == want, 60, lambda: central_sales(rig))
    await _until(lambda: _status(rig, victim).get("sales", {}).get("unacked") == 0, 30, lambda: _status(rig, victim))


async def test_a_stolen_tills_credential_cannot_ack_another_tills_sales(tmp_path):
    async with trio.open_nursery() as nursery:
        rig = Rig(tmp_path, 2)
        try:
            victim, stolen = await _store(rig)
            sales = await _sell(rig, victim, 5)
            incarnation = sales[0]["incarnation"]
            thief = _stolen(rig, stolen)
            await nursery.start(thief.run)
            thief.add_peer(victim, rig.address(victim), GOSSIP_PORT)
            with trio.fail_after(30):
                while not thief.alive():  # the victim talks to it: it is a till of the store, certified
                    await trio.sleep(0.1)

            def refused() -> dict:
                return _status(rig, victim).get("refused", {})

            with trio.fail_after(30):  # "the cache has them all": the till would forget them
                while not (refused().get("sales.ack") and refused().get("sales.digest")):
                    thief.send(victim, SalesAck(victim, incarnation, 5))
                    thief.send(victim, SalesDigest({(victim, incarnation): 5}))
                    await trio.sleep(0.5)
            assert _status(rig, victim)["sales"]["unacked"] == 5
            lines = _log_lines(rig, victim, "storedata.refused", "sales.ack")
            assert len(lines) == 1 and f"from device {stolen}" in lines[0], lines
            await _everything_reaches_central(rig, victim, sales)
        finally:
            with trio.CancelScope(shield=True):
                await rig.stop_all()
        nursery.cancel_scope.cancel()


async def test_a_stolen_till_claiming_to_be_the_cache_gets_no_sales(tmp_path):
    async with trio.open_nursery() as nursery:
        rig = Rig(tmp_path, 2)
        try:
            victim, stolen = await _store(rig)
            sales = await _sell(rig, victim, 3)
            thief = _stolen(rig, stolen)
            thief.role = "cache"  # every hello and heartbeat it sends now says "I am the cache"
            await nursery.start(thief.run)
            thief.add_peer(victim, rig.address(victim), GOSSIP_PORT)
            claims = lambda: _status(rig, victim).get("gossip", {}).get("dropped", {}).get("claim", 0)  # noqa: E731
            await _until(lambda: claims() >= 2, 30, lambda: _status(rig, victim))
            gossip = _status(rig, victim)["gossip"]
            assert stolen not in gossip["peers"] or gossip["peers"][stolen]["role"] == "device", gossip
            told = _kinds(thief)  # the victim may heartbeat it (a certified till), never more
            assert not told & {"sales.push", "sku.digest"}, f"the victim sent the false cache {told}"
            lines = _log_lines(rig, victim, "gossip.refused", f"says it is cache {stolen}")
            assert len(lines) == 1, lines
            assert _status(rig, victim)["sales"]["unacked"] == 3
            await _everything_reaches_central(rig, victim, sales)
        finally:
            with trio.CancelScope(shield=True):
                await rig.stop_all()
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
    async with trio.open_nursery() as nursery:
        rig = Rig(tmp_path, 2)
        try:
            victim, _ = await _store(rig)
            # What someone holding the old store key would send: a length, an envelope, a tag.
            frame = b"\x96\x01" + rig.store.encode() + bytes(48)
            done = await trio.run_process(
                [sys.executable, "-c", PROBE, rig.address(victim), str(GOSSIP_PORT),
                 (len(frame).to_bytes(4, "big") + frame).hex()], capture_stdout=True, capture_stderr=True)
            assert done.returncode == 0, done.stderr
            plain, tls = done.stdout.decode().split(" ", 1)
            assert plain == "", "the till answered plain TCP"  # closed without a byte back
            assert "SSL" in tls or tls.strip() == "", tls  # the till closed the TLS connection it would not trust
            refused = lambda: _status(rig, victim).get("gossip", {}).get("refused", {})  # noqa: E731
            await _until(lambda: refused().get("tls", 0) >= 2, 20, lambda: _status(rig, victim))
            lines = _log_lines(rig, victim, "gossip.refused", "TLS handshake failed")
            assert len(lines) == 1, lines  # one line for this address, not one per attempt
            sales = await _sell(rig, victim, 2)  # the till sells on
            await _everything_reaches_central(rig, victim, sales)
        finally:
            with trio.CancelScope(shield=True):
                await rig.stop_all()
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
