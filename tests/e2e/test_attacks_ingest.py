"""Attacks on central's sales ingest, one scenario each, against a real store (seeder, cache and till processes):
each is refused with one line, and the store's real sales still all reach central."""

from __future__ import annotations

import contextlib
import datetime
import sqlite3
from functools import partial
from pathlib import Path

import httpx
import msgpack
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tuf.api.metadata import Metadata, Root

from posswarm.identity.certificate import CertifiedNode, authority_certificate, issue
from posswarm.identity.credential import Credential, load_credential, write_credential
from posswarm.sales import batch_signature
from posswarm.sales.model import Line, Sale, Tender
from posswarm.trust.roles import role_public_keys
from posswarm.wallclock import now_ms
from seeder.sales import MAX_BODY
from tools.lab import Lab, LabNode, bin_path, run_process


def _now() -> datetime.datetime:
    """Read when used, not at collection: a credential issued later would not be valid yet at a collection-time now."""
    return datetime.datetime.now(datetime.UTC)


class Store:
    """One real store: central (tracker, seeder), its cache and one till, each a process of a Lab."""

    def __init__(self, lab: Lab) -> None:
        self.lab, self.store, self.seeder_url = lab, lab.store, ""
        self.cache, self.till = lab.cache, lab.devices[0]
        self.central_data = lab.root / "central" / "central-data"

    def credential(self, node: LabNode) -> Credential:
        """What a thief copies off ``node``'s disk."""
        return load_credential(node.config.with_name(f"{node.name}.identity"), enrolment_keys(self.lab), now=_now())

    def enrolled(self, node_id: str, *, store: str, role: str) -> Credential:
        """A real credential from central's enrolment key (what a node of another store holds)."""
        out = self.lab.central_keys.enrol(self.lab.root / f"{node_id}.identity", node_id=node_id, store=store,
                                          role=role, device_class="cache" if role == "cache" else "pos")
        return load_credential(out, enrolment_keys(self.lab), now=_now())

    def sees_cache(self) -> bool:
        peers = ((self.lab.status_of(self.till) or {}).get("storedata") or {}).get("gossip", {}).get("peers", {})
        return bool(peers.get(self.cache.node_id, {}).get("alive"))


def enrolment_keys(lab: Lab) -> tuple:
    return tuple(role_public_keys(Metadata[Root].from_bytes(lab.root_of_trust.read_bytes()).signed, "enrolment"))


@contextlib.asynccontextmanager
async def running_store(tmp_path: Path):
    lab = Lab(tmp_path, devices=1)
    (tmp_path / "store.key").write_text("attack-store-secret-0123456789abcdef")
    async with trio.open_nursery() as nursery:
        with trio.fail_after(120):
            await lab.start_central(nursery)
            for node in lab.nodes:
                seeds = {} if node.role == "cache" else {"gossip_seeds": f"{lab.cache.address}:7946"}
                await lab.start_node(nursery, node, extra={"store": {
                    "gossip_key_file": str(tmp_path / "store.key"), "api_port": 0, **seeds}})
            store = Store(lab)
            store.seeder_url = lab.seeder_url
            while not store.sees_cache():
                await trio.sleep(0.1)
        yield store
        nursery.cancel_scope.cancel()


def at_central(store: Store) -> list[tuple]:
    path = store.central_data / "sales.sqlite"
    if not path.exists():
        return []
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)) as db:
        return db.execute("SELECT store, device_id, incarnation, seq FROM sale ORDER BY 1, 2, 3, 4").fetchall()


async def sell(store: Store, count: int) -> list[dict]:
    api = (store.till.data_dir / "api.url").read_text().strip()
    basket = {"lines": [{"sku": "SKU0001", "qty": 1, "unit_cents": 250}], "tenders": [{"kind": "cash", "cents": 250}]}
    async with httpx.AsyncClient(timeout=10) as client:
        answers = [await client.post(f"{api}/sales", json=basket) for _ in range(count)]
    assert all(a.status_code == 201 for a in answers), [a.text for a in answers]
    return [a.json() for a in answers]


async def until_central_holds(store: Store, sold: list[dict]) -> set[tuple]:
    """Until every sale in ``sold`` is at central, under the till's own store; their rows."""
    rows = {(store.store, s["device_id"], s["incarnation"], s["seq"]) for s in sold}
    with trio.fail_after(60):
        while not rows <= set(at_central(store)):
            await trio.sleep(0.2)
    return rows


async def nothing_lost_nothing_forged(store: Store, count: int) -> None:
    """The till sells ``count`` more; central ends up holding exactly the till's real sales, nothing else."""
    rows = await until_central_holds(store, await sell(store, count))
    assert set(at_central(store)) == rows


def batch(device: str, incarnation: str, seqs, cents: int = 1) -> bytes:
    sales = [Sale(device, incarnation, seq, now_ms(), (Line("SKU0001", 1, cents),), cents, (Tender("cash", cents),))
             for seq in seqs]
    return msgpack.packb([s.to_wire() for s in sales])


async def post(rig: Store, store: str, body: bytes, headers: dict | None = None) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10, verify=rig.lab.central_tls) as client:
        return await client.post(f"{rig.seeder_url}/sales/ingest", params={"store": store}, content=body,
                                 headers=headers or {})


def signed(credential: Credential, store: str, body: bytes) -> dict:
    return batch_signature.sign(credential.key, credential.certificate, store, body, now_ms=now_ms())


def one_line(response: httpx.Response, status: int, *needles: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert "\n" not in error and all(n in error for n in needles), error


async def test_a_forged_batch_from_outside_is_refused(tmp_path):
    async with running_store(tmp_path) as store:
        body = batch(store.till.node_id, "ab" * 16, [1, 2, 3], cents=99_999)
        one_line(await post(store, store.store, body), 401, "not signed")
        # A certificate of its own making, claiming to be the store's cache.
        fake_ca, node = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
        ca = authority_certificate(fake_ca, now=_now(), lifetime=datetime.timedelta(days=2))
        claims = CertifiedNode(store.cache.node_id, store.store, "cache", "cache", _now() + datetime.timedelta(days=1))
        own = write_credential(tmp_path / "forged", node, issue(fake_ca, ca, node.public_key(), claims, now=_now()), ca)
        forged = load_credential(own, (fake_ca.public_key(),), now=_now())
        one_line(await post(store, store.store, body, signed(forged, store.store, body)), 401,
                 "not signed by an enrolment key of the root of trust")
        # The real cache's certificate (it is no secret: it crosses the wire), signed with another key.
        real = store.credential(store.cache)
        copied = Credential(real.dir, node, real.certificate, real.identity, real.authorities)
        one_line(await post(store, store.store, body, signed(copied, store.store, body)), 401,
                 "does not match this body")
        # A real signature by the real cache, on a body altered on the way.
        honest = batch(store.till.node_id, "ab" * 16, [1])
        one_line(await post(store, store.store, body, signed(real, store.store, honest)), 401,
                 "does not match this body")

        await nothing_lost_nothing_forged(store, 2)


async def test_a_batch_for_store_b_signed_by_store_a_cache_is_refused(tmp_path):
    async with running_store(tmp_path) as store:
        other = store.enrolled("cache-a", store=f"{store.store}-a", role="cache")
        body = batch(store.till.node_id, "cd" * 16, [1, 2])
        one_line(await post(store, store.store, body, signed(other, store.store, body)), 403,
                 f"signed by cache cache-a of store {store.store}-a", "only its own store's sales")
        await nothing_lost_nothing_forged(store, 1)


async def test_a_stolen_tills_certificate_cannot_post_a_batch(tmp_path):
    async with running_store(tmp_path) as store:
        stolen = store.credential(store.till)
        body = batch(store.till.node_id, "ef" * 16, [1, 2, 3])
        one_line(await post(store, store.store, body, signed(stolen, store.store, body)), 403,
                 f"signed by device {store.till.node_id}", "only the store's cache")
        await nothing_lost_nothing_forged(store, 1)


async def test_another_stores_cache_pre_inserting_a_tills_next_sales_hides_none_of_them(tmp_path):
    async with running_store(tmp_path) as store:
        first = (await sell(store, 1))[0]
        await until_central_holds(store, [first])
        # A certified cache of another store claims the till's next five sale identities as its own.
        attacker = store.enrolled("cache-x", store=f"{store.store}-x", role="cache")
        claimed = batch(store.till.node_id, first["incarnation"], range(first["seq"] + 1, first["seq"] + 6))
        taken = await post(store, attacker.identity.store, claimed, signed(attacker, attacker.identity.store, claimed))
        assert taken.status_code == 200 and taken.json() == {"stored": 5, "duplicates": 0}
        rows = await until_central_holds(store, [first, *await sell(store, 5)])
        # All six of the till's real sales are central's, under its store; none was taken for a duplicate.
        assert {row for row in at_central(store) if row[0] == store.store} == rows and len(rows) == 6


async def _status_line_of(store: Store, host: str, port: int, request: bytes, then_send: int = 0) -> bytes:
    """Send ``request`` (headers) over central's TLS and read the status line; with ``then_send`` keep sending
    that many bytes of chunked body meanwhile (a connection central closes ends it)."""
    stream = trio.SSLStream(await trio.open_tcp_stream(host, port), store.lab.central_tls, server_hostname=host)
    async with stream, trio.open_nursery() as nursery:
        await stream.send_all(request)

        async def more() -> None:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                chunk = b"%x\r\n%s\r\n" % (1 << 16, b"x" * (1 << 16))
                for _ in range(then_send // (1 << 16)):
                    await stream.send_all(chunk)

        if then_send:
            nursery.start_soon(more)
        answer = b""
        while b"\r\n" not in answer:
            data = await stream.receive_some(4096)
            if not data:
                break
            answer += data
        nursery.cancel_scope.cancel()
    return answer.split(b"\r\n", 1)[0]


async def test_an_oversized_body_is_refused_before_it_is_read(tmp_path):
    async with running_store(tmp_path) as store:
        host, port = store.seeder_url.removeprefix("https://").rsplit(":", 1)
        headers = "".join(f"{k}: {v}\r\n" for k, v in signed(store.credential(store.cache), store.store, b"").items())
        head = (f"POST /sales/ingest?store={store.store} HTTP/1.1\r\nHost: {host}\r\n{headers}"
                "content-type: application/msgpack\r\n").encode()
        with trio.fail_after(20):
            # 1 GiB declared, not one byte of it sent: central answers from the header alone.
            line = await _status_line_of(store, host, int(port), head + b"content-length: 1073741824\r\n\r\n")
            assert line.startswith(b"HTTP/1.1 413"), line
            # No length declared: central stops reading at its limit while the sender goes on.
            line = await _status_line_of(store, host, int(port), head + b"transfer-encoding: chunked\r\n\r\n",
                                         then_send=2 * MAX_BODY)
            assert line.startswith(b"HTTP/1.1 413"), line
        await nothing_lost_nothing_forged(store, 1)


async def test_sales_totals_need_the_operator_token(tmp_path):
    lab = Lab(tmp_path, devices=1)
    async with trio.open_nursery() as nursery:
        await lab.start_central(nursery)
        async with httpx.AsyncClient(timeout=10, verify=lab.central_tls) as client:
            for endpoint in ("/sales/totals", "/sales/stream"):
                one_line(await client.get(f"{lab.seeder_url}{endpoint}"), 401, "needs the operator token")
        seeder = [bin_path("posswarm-seeder"), "sales", "totals", "--central", lab.seeder_url, "--central-ca",
                  str(lab.central_keys.authority), "--operator-token-file"]
        done = await trio.run_process([*seeder, str(lab.operator_token_file)], capture_stdout=True,
                                      capture_stderr=True, check=False)
        assert done.returncode == 0 and done.stdout.decode() == "0 sales, 0 cents\n", done.stderr
        wrong = tmp_path / "wrong.token"
        wrong.write_text("x" * 40)
        done = await trio.run_process([*seeder, str(wrong)], capture_stdout=True, capture_stderr=True, check=False)
        lines = done.stderr.decode().strip().splitlines()
        assert done.returncode == 1 and len(lines) == 1 and "needs the operator token" in lines[0], lines
        stream = [bin_path("posswarm-seeder"), "sales", "stream", "--central", lab.seeder_url, "--central-ca",
                  str(lab.central_keys.authority), "--cursor-file", str(tmp_path / "cursor"), "--operator-token-file"]
        done = await trio.run_process([*stream, str(wrong)], capture_stdout=True, capture_stderr=True, check=False)
        lines = done.stderr.decode().strip().splitlines()
        assert done.returncode == 1 and len(lines) == 1 and "needs the operator token" in lines[0], lines
        assert done.stdout == b"" and not (tmp_path / "cursor").exists()
        nursery.cancel_scope.cancel()


async def test_a_plain_serve_shuts_the_operator_endpoints(tmp_path):
    lab = Lab(tmp_path, devices=1)
    async with trio.open_nursery() as nursery:
        url = await nursery.start(partial(
            run_process, "seeder", [bin_path("posswarm-seeder"), "serve", "--releases", str(lab.releases), "--plain-http",
                                    "--listen", f"{lab.central_ip}:0", "--bt-listen", f"{lab.central_ip}:0"],
            lab.logs / "plain-seeder.log"))
        async with httpx.AsyncClient(timeout=10) as client:
            for endpoint in ("/sales/totals", "/sales/stream"):
                one_line(await client.get(f"{url}{endpoint}"), 403, "operator endpoints are off", "--operator-token-file")
            one_line(await client.post(f"{url}/enroll", content=b"{}"), 404, "--enrolment-key")
        assert "event='operator.endpoints_off'" in (lab.logs / "plain-seeder.log").read_text()
        nursery.cancel_scope.cancel()
