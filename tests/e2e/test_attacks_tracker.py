"""Attacks on the tracker with node credentials, against real processes over real TLS: a stolen till's certificate
claiming to be the cache, a seeder, another store or another node; a certificate from another authority; a node
pointed at a plain-HTTP tracker. Each is refused with one line, and the real cache's record stays as it was."""

from __future__ import annotations

import datetime

import httpx
import pytest
import trio
from cryptography import x509

from posswarm.announce import NodeIdentity, ReleaseReport, announce_url, caches_url, parse_caches, parse_reply
from posswarm.errors import PosswarmError
from posswarm.identity.credential import load_credential
from posswarm.identity.tls import tracker_context
from tests.posswarm.gossip.certified import Authority
from tools.lab import Lab, bin_path, write_image

NAME = "pos-image"


def _stolen(lab: Lab, node):
    """The node's own credential, taken off it and driven by the attacker's code."""
    directory = lab.root / "nodes" / f"{node.name}.identity"
    authority = x509.load_pem_x509_certificate((directory / "authority.crt").read_bytes()).public_key()
    return load_credential(directory, (authority,), now=datetime.datetime.now(datetime.UTC))


async def _installed_store(nursery, lab: Lab) -> ReleaseReport:
    """Central, the cache and one till up, one release installed (the cache has announced its catalog)."""
    with trio.fail_after(120):
        await lab.start_central(nursery)
        for node in lab.nodes:
            await lab.start_node(nursery, node)
        await lab.publish(write_image(lab.root / "image.bin", 2, seed=3), "1.0", name=NAME)
        await lab.wait_installed(NAME, "1.0")
    (info_hash,) = (await _stats(lab))["releases"][f"{NAME}@1.0"]["info_hashes"]
    return ReleaseReport(NAME, "1.0", bytes.fromhex(info_hash), 0, 0, 0, 0, 0, True)


async def _stats(lab: Lab) -> dict:
    async with httpx.AsyncClient(verify=lab.central_tls, headers=lab.operator_headers, timeout=10) as client:
        return (await client.get(f"{lab.tracker_url}/stats")).json()


async def _cache_records(lab: Lab) -> list[dict]:
    nodes = (await _stats(lab))["releases"][f"{NAME}@1.0"]["stores"][lab.store]["nodes"]
    return sorted(({k: n[k] for k in ("node", "role", "ip", "port")} for n in nodes if n["role"] == "cache"),
                  key=str)


async def test_a_stolen_tills_certificate_is_that_till_and_nothing_more(tmp_path, nursery):
    lab = Lab(tmp_path, devices=1)
    report = await _installed_store(nursery, lab)
    till, cache = lab.devices[0], lab.cache
    announce = f"{lab.tracker_url}/announce"
    before = await _cache_records(lab)
    assert [(r["node"], r["ip"]) for r in before] == [(cache.node_id, cache.address)]
    claims = {  # what the attacker's code claims, each with the stolen till's certificate
        "role=cache is not the certificate's role device": NodeIdentity(
            till.node_id, lab.store, "cache", "cache", till.address, 6881, catalog_port=8443),
        "role=seeder is not the certificate's role device": NodeIdentity(
            till.node_id, lab.store, "seeder", "seeder", till.address, 6881),
        "store=S-other is not the certificate's store": NodeIdentity(
            till.node_id, "S-other", "device", "pos", till.address, 6881),
        f"node={cache.node_id} is not the certificate's node {till.node_id}": NodeIdentity(
            cache.node_id, lab.store, "device", "pos", till.address, 6881),
    }
    async with httpx.AsyncClient(verify=tracker_context(_stolen(lab, till), lab.central_keys.authority),
                                 timeout=10) as thief:
        with trio.fail_after(60):
            for reason, who in claims.items():
                body = (await thief.get(announce_url(announce, who, report, "started"))).content
                with pytest.raises(PosswarmError) as refused:
                    parse_reply(body, tracker_url=announce)
                assert f"refused the announce: announce from node {till.node_id} of store {lab.store}: {reason}" in str(
                    refused.value), str(refused.value)
            # Announcing as itself, the till is handed its own store's peers and never central's seeder.
            honest = NodeIdentity(till.node_id, lab.store, "device", "pos", till.address, 6881)
            handed = parse_reply((await thief.get(announce_url(announce, honest, report))).content,
                                 tracker_url=announce).peers
            seeder_ip = lab.seeder_url.split("//", 1)[1].rsplit(":", 1)[0]
            assert handed and seeder_ip not in {ip for ip, _ in handed}, handed
            # /caches for another store is refused; for its own it names the real cache only.
            other = NodeIdentity(till.node_id, "S-other", "device", "pos", till.address, 6881)
            with pytest.raises(PosswarmError, match="store=S-other is not the certificate's store"):
                parse_caches((await thief.get(caches_url(announce, other))).content, tracker_url=announce)
            caches = parse_caches((await thief.get(caches_url(announce, honest))).content, tracker_url=announce)
            assert [ip for ip, _ in caches] == [cache.address], caches
    assert await _cache_records(lab) == before
    nursery.cancel_scope.cancel()


async def _over_tls(lab: Lab, credential, path: str) -> bytes:
    """One GET to the tracker over TLS showing ``credential``'s certificate; the first bytes of the answer."""
    host, port = lab.tracker_url.split("//", 1)[1].rsplit(":", 1)
    tls = trio.SSLStream(await trio.open_tcp_stream(host, int(port)),
                         tracker_context(credential, lab.central_keys.authority), server_hostname=host)
    try:
        await tls.do_handshake()  # TLS 1.3: the server judges the client's certificate after this returns
        await tls.send_all(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        return await tls.receive_some(65536)
    finally:
        await tls.aclose()


async def test_a_certificate_from_another_authority_is_refused_in_the_handshake(tmp_path, nursery):
    lab = Lab(tmp_path, devices=1)
    report = await _installed_store(nursery, lab)
    till = lab.devices[0]
    announce = f"{lab.tracker_url}/announce"
    before = await _cache_records(lab)
    # Same node id and store, issued by an enrolment key that is not central's.
    forged = Authority(tmp_path / "foreign").credential(lab.cache.node_id, "cache", lab.store)
    who = NodeIdentity(lab.cache.node_id, lab.store, "cache", "cache", till.address, 6881, catalog_port=8443)
    path = announce_url(announce, who, report, "started").split(lab.tracker_url, 1)[1]
    with trio.fail_after(30):
        # The same request over the same code with the till's genuine certificate is answered ...
        assert (await _over_tls(lab, _stolen(lab, till), path)).startswith(b"HTTP/1.1 200 OK")
        # ... and with the forged one the tracker drops the connection in the handshake, before any answer.
        with pytest.raises(trio.BrokenResourceError):
            await _over_tls(lab, forged, path)
    # A standard client (no certificate at all) still announces over the same TLS port.
    async with httpx.AsyncClient(verify=lab.central_tls, timeout=10) as plain:
        body = (await plain.get(announce_url(announce, NodeIdentity("peer-x", lab.store, "device", "pos", till.address,
                                                                      6999), report))).content
    parse_reply(body, tracker_url=announce)
    assert await _cache_records(lab) == before
    nursery.cancel_scope.cancel()


async def test_a_node_pointed_at_a_plain_http_tracker_stops_with_one_line(tmp_path):
    lab = Lab(tmp_path, devices=1)
    lab.tracker_url = f"http://{lab.central_ip}:6969"  # never started: the node must refuse before it tries
    till = lab.devices[0]
    lab.write_config(till)
    with trio.fail_after(60):
        done = await trio.run_process([bin_path("posswarm"), "node", "--config", str(till.config)],
                                      capture_stdout=True, capture_stderr=True, check=False)
    err = done.stderr.decode()
    assert done.returncode != 0 and err.count("\n") == 1, err
    assert (f"'central.tracker_url' is 'http://{lab.central_ip}:6969/announce'; the tracker is reached over HTTPS "
            "only (https://...)") in err, err
