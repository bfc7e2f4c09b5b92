"""An announce over a node certificate is placed by the certificate: the query's node, store and role are never believed."""

from __future__ import annotations

import dataclasses
import datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from posswarm.errors import PosswarmError
from posswarm.identity.certificate import CertifiedNode, IdentityError, authority_certificate, issue
from posswarm.identity.revocations import Revocation
from tracker.access import Access
from tracker.announce import Announce, BadRequest
from tracker.config import from_mapping
from tracker.desk import Desk
from tracker.node_auth import NodeAuthority
from tracker.peerstore import MemoryPeerStore

H = b"\x11" * 20
NOW = datetime.datetime(2026, 6, 1, tzinfo=datetime.UTC)
TILL = CertifiedNode("till-3", "S1", "device", "pos", NOW + datetime.timedelta(days=1))
CACHE = CertifiedNode("cache-1", "S1", "cache", "cache", NOW + datetime.timedelta(days=1))
OTHER_CACHE = CertifiedNode("cache-9", "S2", "cache", "cache", NOW + datetime.timedelta(days=1))


def announce(n: int, **claims) -> Announce:
    return Announce(info_hash=H, peer_id=b"-PS0100-%012d" % n, ip=f"10.{n}.0.1", port=6881, uploaded=0,
                    downloaded=0, left=0, **claims)


def desk(*, cross_store: bool = False) -> Desk:
    config = from_mapping({"open": True, "cross_store": cross_store})
    return Desk(config, MemoryPeerStore(peer_ttl=90, retain=3600), Access(open=True))


@pytest.mark.parametrize("claims, reason", [
    ({"role": "cache", "store": "S1"}, "role=cache is not the certificate's role device"),
    ({"role": "seeder"}, "role=seeder is not the certificate's role device"),
    ({"role": "device", "store": "S2"}, "store=S2 is not the certificate's store S1"),
    ({"role": "device", "store": "S1", "node": "cache-1"}, "node=cache-1 is not the certificate's node till-3"),
])
def test_a_query_that_contradicts_its_certificate_is_refused_in_one_line(claims, reason):
    d = desk()
    with pytest.raises(BadRequest) as refused:
        d.announce(announce(1, **claims), None, 100.0, TILL)
    assert str(refused.value) == f"announce from node till-3 of store S1: {reason}"
    assert list(d.store.records()) == []  # nothing recorded


def test_the_certificate_places_an_announce_that_claims_nothing():
    d = desk()
    d.announce(announce(1, device_class="kiosk"), None, 100.0, TILL)
    (record,) = d.store.records()
    assert (record.node, record.store, record.role, record.device_class, record.certified) == (
        "till-3", "S1", "device", "pos", True)


def test_a_device_certificate_is_handed_its_own_store_alone():
    d = desk(cross_store=True)
    d.announce(announce(1), None, 100.0, OTHER_CACHE)
    d.announce(announce(2, role="seeder"), None, 100.0)  # open mode: a seeder is central
    d.announce(announce(3), None, 100.0, CACHE)
    answer = d.announce(announce(4), None, 100.0, TILL)
    assert {ip for ip, _port, _id in answer.peers} == {"10.3.0.1"}


def test_a_passkey_announce_naming_a_certified_node_cannot_move_its_record():
    d = desk()
    d.announce(announce(1), None, 100.0, CACHE)
    # The same node id over the query alone (a stolen till's passkey, or open mode): a record of its own.
    d.announce(announce(2, role="cache", store="S1", node="cache-1", catalog_port=8443), None, 101.0)
    certified = [r for r in d.store.records() if r.certified]
    assert [(r.node, r.ip) for r in certified] == [("cache-1", "10.1.0.1")]
    d.announce(announce(5, catalog_port=8443), None, 102.0, CACHE)  # the certificate's own node moves it
    assert [r.ip for r in d.store.records() if r.certified] == ["10.5.0.1"]


def test_a_certified_cache_is_told_to_its_store_only_and_not_replaced_by_a_claim():
    d = desk()
    d.announce(announce(1, catalog_port=8443), None, 100.0, CACHE)
    d.announce(announce(2, role="cache", store="S1", node="cache-1", catalog_port=9999), None, 101.0)
    assert ("10.1.0.1", 8443) in d.store_caches(None, None, "10.3.0.1", 101.0, TILL)
    with pytest.raises(BadRequest, match="store=S2 is not the certificate's store S1"):
        d.store_caches(None, "S2", "10.3.0.1", 101.0, TILL)


def test_private_mode_needs_no_passkey_from_a_certified_node_but_a_published_release():
    access = Access(open=False, passkeys={"S1": "k" * 24})
    with pytest.raises(BadRequest, match="is not a published release"):
        access.admit(announce(1), None, 100.0, TILL)
    access.publish([H])
    assert access.admit(announce(1), None, 100.0, TILL).store == "S1"


def test_a_certificate_in_central_s_store_is_not_central():
    central = CertifiedNode("x", "central", "cache", "cache", NOW + datetime.timedelta(days=1))
    with pytest.raises(BadRequest, match="central's own"):
        desk().announce(announce(1), None, 100.0, central)


def _issued(key: Ed25519PrivateKey, pem: bytes, node: CertifiedNode, *, now: datetime.datetime = NOW) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = issue(key, pem, Ed25519PrivateKey.generate().public_key(), node, now=now)
    return x509.load_pem_x509_certificate(cert).public_bytes(serialization.Encoding.DER)


def test_the_authority_admits_its_own_certificates_only():
    key, foreign = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    pem = authority_certificate(key, now=NOW, lifetime=datetime.timedelta(days=30))
    authority = NodeAuthority(pem + authority_certificate(Ed25519PrivateKey.generate(), now=NOW,
                                                          lifetime=datetime.timedelta(days=30)))
    at = NOW.timestamp() + 60
    assert dataclasses.replace(authority.admit(_issued(key, pem, TILL), at), issued_at=None) == TILL
    foreign_pem = authority_certificate(foreign, now=NOW, lifetime=datetime.timedelta(days=30))
    with pytest.raises(IdentityError, match="not signed by an enrolment key"):
        authority.admit(_issued(foreign, foreign_pem, TILL), at)
    with pytest.raises(IdentityError, match="expired"):
        authority.admit(_issued(key, pem, TILL), at + 2 * 86400)
    with pytest.raises(PosswarmError, match="no PEM certificate"):
        NodeAuthority(b"not a certificate")


def test_a_certificate_central_revoked_is_refused_with_the_lists_reason_until_the_node_is_enrolled_again():
    key = Ed25519PrivateKey.generate()
    pem = authority_certificate(key, now=NOW, lifetime=datetime.timedelta(days=30))
    authority = NodeAuthority(pem)
    at = NOW.timestamp() + 60
    stolen, other = _issued(key, pem, TILL), _issued(key, pem, dataclasses.replace(TILL, node_id="till-4"))
    kept_alive = authority.admit(stolen, at)  # admitted before the revocation, on a connection still open
    revoked_at = int(at) + 10
    authority.revoked.replace((Revocation("S1", "till-3", revoked_at, "stolen from the counter"),))

    with pytest.raises(IdentityError) as refused:
        authority.admit(stolen, at + 20)
    reason = str(refused.value)
    assert "\n" not in reason and "till-3" in reason and "S1" in reason
    assert "certificate revoked by central" in reason and "stolen from the counter" in reason
    with pytest.raises(IdentityError, match="certificate revoked by central"):
        authority.still_admitted(kept_alive)
    assert authority.admit(other, at + 20).node_id == "till-4"  # the store's other till is not touched
    # Another store's node of the same name is another node.
    assert authority.admit(_issued(key, pem, dataclasses.replace(TILL, store="S2")), at + 20).store == "S2"
    # Enrolled again after the revocation: the new certificate is believed, the old one still is not.
    later = NOW + datetime.timedelta(hours=1)
    again = _issued(key, pem, dataclasses.replace(TILL, not_after=later + datetime.timedelta(days=1)), now=later)
    assert authority.admit(again, later.timestamp() + 60).node_id == "till-3"
    with pytest.raises(IdentityError, match="certificate revoked by central"):
        authority.admit(stolen, later.timestamp() + 60)
