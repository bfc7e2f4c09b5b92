"""Node certificates: issued by the enrolment key, refused when forged, expired, or not a node's."""

from __future__ import annotations

import datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from posswarm.identity.certificate import (
    CertifiedNode,
    IdentityError,
    authority_certificate,
    issue,
    load,
    public_key,
    verify,
)

NOW = datetime.datetime(2026, 12, 1, 12, 0, tzinfo=datetime.UTC)
DAY = datetime.timedelta(days=1)


def enrol(authority_key, node_key, **claims):
    fields = {"node_id": "till-01", "store": "S042", "role": "device", "device_class": "till",
              "not_after": NOW + 30 * DAY} | claims
    ca = authority_certificate(authority_key, now=NOW, lifetime=365 * DAY)
    return issue(authority_key, ca, node_key.public_key(), CertifiedNode(**fields), now=NOW)


def test_a_certificate_says_who_its_node_is():
    authority, node = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    identity = verify(enrol(authority, node), [authority.public_key()], now=NOW + DAY)
    assert (identity.node_id, identity.store, identity.role, identity.device_class) == ("till-01", "S042", "device",
                                                                                           "till")
    cert = load(enrol(authority, node))
    assert public_key(cert).public_bytes_raw() == node.public_key().public_bytes_raw()


def test_another_authority_expiry_and_bad_names_are_refused():
    authority, node, other = (Ed25519PrivateKey.generate() for _ in range(3))
    cert = enrol(authority, node)
    with pytest.raises(IdentityError, match="not signed by an enrolment key"):
        verify(cert, [other.public_key()], now=NOW)
    with pytest.raises(IdentityError, match="expired"):
        verify(cert, [authority.public_key()], now=NOW + 31 * DAY)
    with pytest.raises(IdentityError, match="not valid before"):
        verify(cert, [authority.public_key()], now=NOW - DAY)
    with pytest.raises(IdentityError, match="store"):
        enrol(authority, node, store="S0:42")
    with pytest.raises(IdentityError, match="role"):
        enrol(authority, node, role="seeder")
    with pytest.raises(IdentityError, match="it is a CA certificate"):
        verify(authority_certificate(authority, now=NOW, lifetime=DAY), [authority.public_key()], now=NOW)


def test_garbage_is_refused_before_parsing():
    with pytest.raises(IdentityError, match="over 8192"):
        load(b"x" * 9000)
    with pytest.raises(IdentityError, match="unreadable"):
        load(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")


def credential_in(tmp_path, authority, **claims):
    from seeder.enrolment import write_credential

    node = Ed25519PrivateKey.generate()
    ca = authority_certificate(authority, now=NOW, lifetime=365 * DAY)
    fields = {"node_id": "till-01", "store": "S042", "role": "device", "device_class": "till",
              "not_after": datetime.datetime.now(datetime.UTC) + DAY} | claims
    cert = issue(authority, ca, node.public_key(), CertifiedNode(**fields), now=datetime.datetime.now(datetime.UTC))
    return write_credential(tmp_path / fields["node_id"], node, cert, ca)


def test_a_credential_directory_is_checked_against_the_root_and_the_configuration(tmp_path):
    from posswarm.identity.credential import check_matches, load_credential

    authority, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    directory = credential_in(tmp_path, authority)
    now = datetime.datetime.now(datetime.UTC)
    credential = load_credential(directory, (authority.public_key(),), now=now)
    assert credential.identity.describe() == "device till-01 of store S042"
    check_matches(credential.identity, node_id="till-01", store="S042", role="device")
    with pytest.raises(IdentityError, match="certificate is for node.store 'S042', configuration says 'S043'"):
        check_matches(credential.identity, node_id="till-01", store="S043", role="device")
    with pytest.raises(IdentityError, match="not signed by an enrolment key"):
        load_credential(directory, (other.public_key(),), now=now)
    (directory / "node.key").chmod(0o644)
    with pytest.raises(IdentityError, match="readable by other users"):
        load_credential(directory, (authority.public_key(),), now=now)


async def test_mutual_tls_between_store_peers_names_the_certified_node(tmp_path):
    import trio
    import trio.testing

    from posswarm.identity.credential import load_credential
    from posswarm.identity.tls import peer_context, peer_identity

    authority = Ed25519PrivateKey.generate()
    now = datetime.datetime.now(datetime.UTC)
    till = load_credential(credential_in(tmp_path, authority), (authority.public_key(),), now=now)
    cache = load_credential(credential_in(tmp_path, authority, node_id="cache", role="cache"),
                            (authority.public_key(),), now=now)
    elsewhere = load_credential(credential_in(tmp_path, authority, node_id="cache-b", store="S043", role="cache"),
                                (authority.public_key(),), now=now)
    for server_credential, expect in ((cache, "cache cache of store S042"), (elsewhere, "not ours")):
        left, right = trio.testing.memory_stream_pair()
        client = trio.SSLStream(left, peer_context(till, server=False), server_side=False)
        server = trio.SSLStream(right, peer_context(server_credential, server=True), server_side=True)
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(server.do_handshake)
                await client.do_handshake()
        if expect.startswith("cache"):
            assert peer_identity(client, till, now=now).describe() == expect
            assert peer_identity(server, server_credential, now=now).node_id == "till-01"
        else:
            with pytest.raises(IdentityError, match=expect):
                peer_identity(client, till, now=now)
