"""Node certificates: issued by the enrolment key, refused when forged, expired, or not a node's."""

from __future__ import annotations

import datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from posswarm.identity.certificate import (
    IdentityError,
    NodeIdentity,
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
    return issue(authority_key, ca, node_key.public_key(), NodeIdentity(**fields), now=NOW)


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
