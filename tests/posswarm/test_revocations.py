"""Central's list of revoked node certificates: read only from targets the root's targets key signed, fresh and
bounded; a revoked node's certificates up to the revocation are refused, a later one is not (pure)."""

from __future__ import annotations

import datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tuf.api.metadata import Metadata, Role, Root, Targets

from posswarm.identity.certificate import CertifiedNode, authority_certificate, issue, verify
from posswarm.identity.revocations import (
    FIELD,
    MAX_TARGETS_BYTES,
    Revocation,
    RevocationError,
    RevokedNodes,
    added,
    entries_of,
)
from posswarm.identity.revocations import verify as verify_list
from posswarm.trust.roles import signer, tuf_key

NOW = datetime.datetime(2026, 12, 2, 3, 0, tzinfo=datetime.UTC)
DAY = datetime.timedelta(days=1)
STOLEN = Revocation("S042", "till-2", int(NOW.timestamp()), "stolen from the counter")


def _root(targets_key: Ed25519PrivateKey) -> Root:
    root = Root(roles={role: Role([], 1) for role in ("root", "targets", "snapshot", "timestamp")})
    root.add_key(tuf_key(targets_key.public_key()), "targets")
    return root


def _targets(key: Ed25519PrivateKey, entries, *, version: int = 2, expires: datetime.datetime = NOW + 365 * DAY) -> bytes:
    md = Metadata(Targets(version=version, expires=expires,
                          unrecognized_fields={FIELD: [e.to_dict() if isinstance(e, Revocation) else e for e in entries]}))
    md.sign(signer(key))
    return md.to_bytes()


def _certified(node_id: str, issued: datetime.datetime) -> CertifiedNode:
    authority, node = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    ca = authority_certificate(authority, now=issued, lifetime=365 * DAY)
    pem = issue(authority, ca, node.public_key(),
                CertifiedNode(node_id, "S042", "device", "pos", issued + 30 * DAY), now=issued)
    return verify(pem, [authority.public_key()], now=issued + datetime.timedelta(seconds=1))


def test_a_signed_list_revokes_the_nodes_certificates_issued_until_then_and_no_later_one():
    key = Ed25519PrivateKey.generate()
    version, entries = verify_list(_targets(key, [STOLEN]), _root(key), now=NOW)
    assert (version, entries) == (2, (STOLEN,))
    revoked = RevokedNodes(entries)
    old = _certified("till-2", NOW - 30 * DAY)
    why = revoked.is_revoked(old)
    assert why == ("device till-2 of store S042: certificate revoked by central at 2026-12-02T03:00:00Z: stolen from "
                   "the counter (enrol it again to restore it)")
    assert revoked.is_revoked(_certified("till-2", NOW + datetime.timedelta(seconds=5))) is None, "enrolled again"
    assert revoked.is_revoked(_certified("till-1", NOW - 30 * DAY)) is None
    other_store = CertifiedNode("till-2", "S043", "device", "pos", NOW + DAY, NOW - DAY)
    assert revoked.is_revoked(other_store) is None, "node ids repeat across stores"


def test_a_tampered_list_is_refused():
    key = Ed25519PrivateKey.generate()
    signed = _targets(key, [STOLEN])
    tampered = signed.replace(b'"till-2"', b'"till-3"')
    assert tampered != signed
    with pytest.raises(RevocationError, match="^central's revocation list: targets.json refused .*forged"):
        verify_list(tampered, _root(key), now=NOW)
    with pytest.raises(RevocationError, match="forged or damaged"):  # signed, but not by the root's targets key
        verify_list(_targets(Ed25519PrivateKey.generate(), []), _root(key), now=NOW)


def test_a_stale_list_is_refused():
    key = Ed25519PrivateKey.generate()
    with pytest.raises(RevocationError, match="^central's revocation list: targets.json expired at 2026-12-01"):
        verify_list(_targets(key, [STOLEN], expires=NOW - DAY), _root(key), now=NOW)
    # Central reading its own repository: a targets not re-signed for a year still revokes.
    assert verify_list(_targets(key, [STOLEN], expires=NOW - DAY), _root(key), now=None)[1] == (STOLEN,)
    with pytest.raises(RevocationError, match="targets version 2 is older than version 5 already seen; a replayed"):
        verify_list(_targets(key, []), _root(key), now=NOW, newest_version=5)


def test_oversize_and_malformed_input_is_refused_with_one_line():
    key = Ed25519PrivateKey.generate()
    with pytest.raises(RevocationError, match="over 33554432; refused unread"):
        verify_list(b" " * (MAX_TARGETS_BYTES + 1), _root(key), now=NOW)
    for bad, why in (({"store": "S042", "node": "till:2", "revoked_at": 1, "reason": ""}, "node id"),
                     ({"store": "S042", "node": "till-2", "revoked_at": -1, "reason": ""}, "revoked_at"),
                     ({"store": "S042", "node": "till-2", "revoked_at": 1, "reason": "x" * 201}, "reason"),
                     ({"store": "S042"}, "node"), ("till-2", "")):
        with pytest.raises(RevocationError, match=f"^central's revocation list: entry 0 unreadable .*{why}"):
            verify_list(_targets(key, [bad]), _root(key), now=NOW)
    with pytest.raises(RevocationError, match="not a list"):
        entries_of(Targets(unrecognized_fields={FIELD: {"till-2": 1}}))


def test_the_list_only_grows_and_an_absent_one_is_empty():
    assert entries_of(Targets()) == ()
    again = Revocation("S042", "till-2", STOLEN.revoked_at + 60, "found again")
    assert added((STOLEN,), again) == (STOLEN,), "the first revocation stands"
    other = Revocation("S042", "cache", STOLEN.revoked_at, "")
    assert added((STOLEN,), other) == (STOLEN, other)
