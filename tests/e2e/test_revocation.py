"""Revoking a node at central, with nothing done on any node, against real processes: a revoked till's gossip is
refused by its cache and its new sales never reach central while the other till's keep flowing; a revoked
cache's next batch is refused at central while another store's is taken; a revoked till's announce over TLS is
refused by the tracker while the other till's is answered; each revoked node says so itself."""

from __future__ import annotations

import datetime
import os
import signal

import httpx
import msgpack
import pytest
import trio

from posswarm.announce import NodeIdentity, ReleaseReport, announce_url, parse_reply
from posswarm.errors import PosswarmError
from posswarm.gossip.driver import StoreChannel
from posswarm.gossip.messages import SalesPush
from posswarm.identity.credential import Credential, load_credential
from posswarm.identity.tls import tracker_context
from posswarm.sales import batch_signature
from posswarm.sales.model import Line, Sale, Tender
from posswarm.wallclock import now_ms
from tests.e2e.test_attacks_ingest import enrolment_keys
from tests.e2e.test_attacks_store import (
    GOSSIP_PORT,
    STORE_DATA,
    _central_sales,
    _log_lines,
    _sell,
    _selling_store,
    _status,
    _until,
)
from tools.lab import Lab, LabNode, bin_path

REVOKED_WITHIN_S = 30  # central re-signs at once; the cache polls every second, the tills poll the cache


def _credential(lab: Lab, node: LabNode) -> Credential:
    """What a thief copied off ``node``'s disk before it was revoked."""
    return load_credential(lab.root / "nodes" / f"{node.name}.identity", enrolment_keys(lab),
                           now=datetime.datetime.now(datetime.UTC))


async def _revoke(lab: Lab, node: LabNode, reason: str) -> str:
    """The operator's one command at central."""
    done = await trio.run_process(
        [bin_path("posswarm-seeder"), "enroll-revoke", node.node_id, "--store", lab.store, "--reason", reason,
         "--keys", str(lab.keys), "--releases", str(lab.releases)], capture_stdout=True, capture_stderr=True,
        check=False)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


async def _listed(lab: Lab) -> str:
    done = await trio.run_process([bin_path("posswarm-seeder"), "enroll-revoked", "--releases", str(lab.releases)],
                                  capture_stdout=True, check=True)
    return done.stdout.decode()


def _rows(sold: list[dict]) -> set[tuple]:
    return {(s["device_id"], s["incarnation"], s["seq"]) for s in sold}


def _says_revoked(lab: Lab, node: LabNode) -> str | None:
    return (lab.status_of(node) or {}).get("revoked")


async def test_a_revoked_till_is_refused_by_its_cache_and_the_other_till_keeps_selling(tmp_path):
    lab = Lab(tmp_path, devices=2)
    async with trio.open_nursery() as nursery:
        await _selling_store(nursery, lab)
        till1, till2 = lab.devices
        before = await _sell(till1, 3) + await _sell(till2, 3)
        await _until(lambda: _rows(before) <= set(_central_sales(lab)), 60, lambda: _central_sales(lab))

        printed = await _revoke(lab, till2, "stolen from the counter")
        assert f"revoked node {till2.node_id} of store {lab.store}" in printed, printed
        assert f"{lab.store}\t{till2.node_id}\t" in await _listed(lab)
        # The till itself hears it from its cache: it says so once and stops speaking for the store.
        await _until(lambda: _says_revoked(lab, till2), REVOKED_WITHIN_S, lambda: lab.status_of(till2))
        assert "certificate revoked by central" in _says_revoked(lab, till2)
        assert len(_log_lines(lab, till2, "node.revoked", "stolen from the counter")) == 1
        async with httpx.AsyncClient(timeout=5) as client:  # its sales API is gone with its gossip
            api = (till2.data_dir / "api.url").read_text().strip()
            try:
                answer = await client.post(f"{api}/sales", json={})
            except httpx.TransportError:
                answer = None
        assert answer is None, answer.text

        # The thief's own software, with till-2's credential, at till-2's address: the cache refuses it.
        lab.kill(till2)
        thief = StoreChannel(credential=_credential(lab, till2), address=till2.address, port=GOSSIP_PORT)
        await nursery.start(thief.run)
        thief.add_peer(lab.cache.node_id, lab.cache.address, GOSSIP_PORT)
        incarnation = before[-1]["incarnation"]
        forged = SalesPush(tuple(Sale(till2.node_id, incarnation, seq, now_ms(), (Line("SKU0001", 1, 250),), 250,
                                      (Tender("cash", 250),)) for seq in (4, 5, 6)))

        def cache_refused() -> list[str]:
            return _log_lines(lab, lab.cache, "gossip.refused", till2.node_id, "certificate revoked by central")

        with trio.fail_after(REVOKED_WITHIN_S):
            while not cache_refused():
                thief.send(lab.cache.node_id, forged)
                await trio.sleep(0.5)
        await _until(lambda: _status(lab, lab.cache)["gossip"]["refused"].get("certificate", 0) >= 1, 10,
                     lambda: _status(lab, lab.cache)["gossip"])  # counted (status is written every 0.5 s)
        assert not thief.alive(), "the cache closed every connection right after the handshake"

        after = await _sell(till1, 3)  # till-1 keeps selling, and nothing of it is lost
        await _until(lambda: _rows(after) <= set(_central_sales(lab)), 60, lambda: _central_sales(lab))
        central = set(_central_sales(lab))
        assert central == _rows(before) | _rows(after), "till-2's earlier sales stay; none of its new ones arrive"
        nursery.cancel_scope.cancel()


async def test_a_revoked_caches_next_batch_is_refused_while_another_stores_is_taken(tmp_path):
    lab = Lab(tmp_path, devices=1)
    async with trio.open_nursery() as nursery:
        await _selling_store(nursery, lab)
        till = lab.devices[0]
        before = await _sell(till, 2)
        await _until(lambda: _rows(before) <= set(_central_sales(lab)), 60, lambda: _central_sales(lab))
        stolen = _credential(lab, lab.cache)
        other_store = lab.central_keys.enrol(tmp_path / "other.identity", node_id="cache", store="S999", role="cache",
                                             device_class="cache")
        other = load_credential(other_store, enrolment_keys(lab), now=datetime.datetime.now(datetime.UTC))

        await _revoke(lab, lab.cache, "server room break-in")

        async def post(credential: Credential, store: str, seq: int) -> httpx.Response:
            body = msgpack.packb([Sale("till-x", "ab" * 16, seq, now_ms(), (Line("SKU0001", 1, 100),), 100,
                                       (Tender("cash", 100),)).to_wire()])
            headers = batch_signature.sign(credential.key, credential.certificate, store, body, now_ms=now_ms())
            async with httpx.AsyncClient(timeout=10, verify=lab.central_tls) as client:
                return await client.post(f"{lab.seeder_url}/sales/ingest", params={"store": store}, content=body,
                                         headers=headers)

        with trio.fail_after(REVOKED_WITHIN_S):  # the running seeder takes the new targets within a second
            while (answer := await post(stolen, lab.store, 1)).status_code != 403:
                assert answer.status_code == 200, answer.text
                await trio.sleep(0.2)
        error = answer.json()["error"]
        assert "\n" not in error and "certificate revoked by central" in error and "server room break-in" in error
        assert len(_log_lines(lab, lab.cache, "node.revoked")) <= 1
        taken = await post(other, "S999", 1)  # another store's cache is not touched by it
        assert taken.status_code == 200 and taken.json()["stored"] == 1, taken.text
        seeder_lines = [line for line in (lab.logs / "seeder.log").read_text().splitlines()
                        if "sales.refused" in line and "certificate revoked" in line]
        assert seeder_lines, "central logged the refusal in one line"

        await _until(lambda: _says_revoked(lab, lab.cache), REVOKED_WITHIN_S, lambda: lab.status_of(lab.cache))
        assert len(_log_lines(lab, lab.cache, "node.revoked", "server room break-in")) == 1
        # The till heard it relayed by that very cache, and takes it as a catalog source no more.
        await _until(lambda: _log_lines(lab, till, "catalog.source_refused", "certificate revoked by central"),
                     REVOKED_WITHIN_S, lambda: (lab.status_of(till) or {}).get("catalog"))
        # The till's sales made meanwhile wait in its outbox; un-revoking is enrolling the cache again.
        held = await _sell(till, 2)
        lab.kill(lab.cache)
        (lab.root / "nodes" / f"{lab.cache.name}.identity").rename(tmp_path / "revoked.identity")
        await lab.start_node(nursery, lab.cache, extra=STORE_DATA)
        await _until(lambda: _rows(before) | _rows(held) <= set(_central_sales(lab)), 60, lambda: _central_sales(lab))
        assert not _says_revoked(lab, lab.cache)
        nursery.cancel_scope.cancel()


def _refused_announces(metrics: str) -> float:
    (line,) = [line for line in metrics.splitlines()
               if line.startswith('posswarm_tracker_requests_total{kind="announce",result="refused",transport="http"}')]
    return float(line.rsplit(" ", 1)[1])


async def test_a_revoked_tills_next_announce_is_refused_by_the_tracker_while_the_other_tills_is_answered(tmp_path):
    lab = Lab(tmp_path, devices=2)
    till1, till2 = lab.devices
    for till in (till1, till2):
        lab.write_config(till)  # enrolled at central, as its first start does
    report = ReleaseReport("pos-image", "1.0", b"\x5a" * 20, 1000, 1000, 0, 0, 0, False)
    announce = None

    async def ask(client: httpx.AsyncClient, till: LabNode) -> bytes:
        who = NodeIdentity(till.node_id, lab.store, "device", "pos", till.address, 6881)
        return (await client.get(announce_url(announce, who, report))).content

    def tls(till: LabNode) -> httpx.AsyncClient:
        return httpx.AsyncClient(verify=tracker_context(_credential(lab, till), lab.central_keys.authority), timeout=10)

    async with trio.open_nursery() as nursery:
        with trio.fail_after(60):
            await lab.start_central(nursery)
        announce = f"{lab.tracker_url}/announce"
        async with tls(till1) as other, tls(till2) as stolen, httpx.AsyncClient(
                verify=lab.central_tls, headers=lab.operator_headers, timeout=10) as operator:
            parse_reply(await ask(stolen, till2), tracker_url=announce)  # answered, and its connection kept alive
            refused_before = _refused_announces((await operator.get(f"{lab.tracker_url}/metrics")).text)

            await _revoke(lab, till2, "stolen from the counter")
            # The tracker reads central's signed list every catalog poll (1 s in the lab), on the kept connection too.
            with trio.fail_after(REVOKED_WITHIN_S):
                while True:
                    try:
                        parse_reply(await ask(stolen, till2), tracker_url=announce)
                    except PosswarmError as exc:
                        refusal = str(exc)
                        break
                    await trio.sleep(0.5)
            assert "\n" not in refusal and f"{till2.node_id} of store {lab.store}" in refusal, refusal
            assert "certificate revoked by central" in refusal and "stolen from the counter" in refusal, refusal
            async with tls(till2) as again:  # a new connection's handshake admits it no more either
                with pytest.raises(PosswarmError, match="certificate revoked by central"):
                    parse_reply(await ask(again, till2), tracker_url=announce)
            assert parse_reply(await ask(other, till1), tracker_url=announce).peers is not None
            refused_after = _refused_announces((await operator.get(f"{lab.tracker_url}/metrics")).text)
            assert refused_after >= refused_before + 2, (refused_before, refused_after)
            tracker_log = (lab.logs / "tracker.log").read_text()
            assert "revocation.unchecked" not in tracker_log
            assert "revocations.followed" in tracker_log and "revoked_nodes=1" in tracker_log

            # Central's seeder gone: the tracker says so once and keeps the list it verified, never none.
            os.kill(lab.pids["seeder"], signal.SIGKILL)
            def kept() -> list[str]:
                return [line for line in (lab.logs / "tracker.log").read_text().splitlines()
                        if "revocations.unreadable" in line and "kept=1" in line]

            await _until(kept, REVOKED_WITHIN_S, lambda: (lab.logs / "tracker.log").read_text()[-2000:])
            async with tls(till2) as later:
                with pytest.raises(PosswarmError, match="certificate revoked by central"):
                    parse_reply(await ask(later, till2), tracker_url=announce)
            parse_reply(await ask(other, till1), tracker_url=announce)
        nursery.cancel_scope.cancel()
