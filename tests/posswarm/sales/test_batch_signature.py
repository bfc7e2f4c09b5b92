"""The cache's signature on a sales batch, checked as central checks it (pure: no server)."""

from __future__ import annotations

import datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from posswarm.identity.credential import load_credential
from posswarm.identity.revocations import Revocation, RevokedNodes
from posswarm.sales.batch_signature import (
    MAX_SKEW_MS,
    SIGNATURE_HEADER,
    BatchRefused,
    VerifiedCertificates,
    check_sender,
    check_signature,
    sign,
)
from tests.posswarm.test_identity import credential_in


def _now_ms() -> int:
    """Read when the test runs, not at collection: a long suite would otherwise sign before the certificate."""
    return int(datetime.datetime.now(datetime.UTC).timestamp() * 1000)


@pytest.fixture
def cache(tmp_path):
    authority = Ed25519PrivateKey.generate()
    credential = load_credential(credential_in(tmp_path, authority, node_id="cache", role="cache"),
                                 (authority.public_key(),), now=datetime.datetime.now(datetime.UTC))
    return credential, [authority.public_key()]


def test_a_signed_batch_is_believed_for_its_store_and_body_only(cache):
    credential, authorities = cache
    now_ms = _now_ms()
    headers = sign(credential.key, credential.certificate, "S042", b"batch", now_ms=now_ms)
    sender = check_sender(headers, "S042", authorities, now_ms=now_ms + 1000)
    check_signature(sender, "S042", b"batch")
    assert sender.identity.describe() == "cache cache of store S042"
    with pytest.raises(BatchRefused, match="does not match this body"):
        check_signature(sender, "S042", b"batch, altered")
    with pytest.raises(BatchRefused, match="only its own store's sales") as refused:
        check_sender(headers, "S043", authorities, now_ms=now_ms)
    assert refused.value.status == 403


@pytest.mark.parametrize(("change", "status", "reason"), [
    ({"now_ms": MAX_SKEW_MS + 1000}, 401, "check the cache's clock"),  # offsets from the moment the test runs
    ({"signed_ms": -MAX_SKEW_MS - 1000}, 401, "check the cache's clock"),  # an old capture replayed
    ({"authorities": []}, 503, "names no enrolment key"),
    ({SIGNATURE_HEADER: "not base64!"}, 401, "is not base64"),
    ({SIGNATURE_HEADER: ""}, 401, "not signed"),
])
def test_stale_unanchored_or_mangled_signatures_are_refused_with_one_line(cache, change, status, reason):
    credential, authorities = cache
    now_ms = _now_ms()
    headers = sign(credential.key, credential.certificate, "S042", b"batch", now_ms=now_ms + change.get("signed_ms", 0))
    headers |= {k: v for k, v in change.items() if k.startswith("x-")}
    with pytest.raises(BatchRefused, match=reason) as refused:
        check_sender(headers, "S042", change.get("authorities", authorities), now_ms=now_ms + change.get("now_ms", 0))
    assert refused.value.status == status and "\n" not in str(refused.value)


def test_a_revoked_caches_batch_is_refused_and_a_re_enrolled_one_is_believed(cache, tmp_path):
    credential, authorities = cache
    now_ms = _now_ms()
    headers = sign(credential.key, credential.certificate, "S042", b"batch", now_ms=now_ms)
    revoked = RevokedNodes((Revocation("S042", "cache", now_ms // 1000 + 1, "server room break-in"),))
    with pytest.raises(BatchRefused, match=r"^sales batch for store S042: cache cache of store S042: certificate "
                                           r"revoked by central at .*: server room break-in") as refused:
        check_sender(headers, "S042", authorities, now_ms=now_ms, revoked=revoked)
    assert refused.value.status == 403
    assert check_sender(headers, "S042", authorities, now_ms=now_ms, revoked=RevokedNodes()).identity.node_id == "cache"
    earlier = RevokedNodes((Revocation("S042", "cache", now_ms // 1000 - 3600, ""),))  # enrolled after it
    check_sender(headers, "S042", authorities, now_ms=now_ms, revoked=earlier)


def test_a_remembered_certificate_is_still_held_to_its_validity_revocation_store_and_root(cache):
    credential, authorities = cache
    known, now_ms = VerifiedCertificates(), _now_ms()
    headers = sign(credential.key, credential.certificate, "S042", b"batch", now_ms=now_ms)
    assert check_sender(headers, "S042", authorities, now_ms=now_ms, known=known).identity.node_id == "cache"
    assert len(known) == 1
    revoked = RevokedNodes((Revocation("S042", "cache", now_ms // 1000 + 1, "stolen"),))
    with pytest.raises(BatchRefused, match="certificate revoked by central"):  # the next batch, revoked meanwhile
        check_sender(headers, "S042", authorities, now_ms=now_ms, revoked=revoked, known=known)
    with pytest.raises(BatchRefused, match="only its own store's sales"):
        check_sender(headers, "S043", authorities, now_ms=now_ms, known=known)
    after = int(credential.certificate.not_valid_after_utc.timestamp() * 1000) + 1000
    late = sign(credential.key, credential.certificate, "S042", b"batch", now_ms=after)
    with pytest.raises(BatchRefused, match="node certificate: expired at .*; enrol the node again") as refused:
        check_sender(late, "S042", authorities, now_ms=after, known=known)
    assert refused.value.status == 401 and len(known) == 0
    check_sender(headers, "S042", authorities, now_ms=now_ms, known=known)
    rotated = [Ed25519PrivateKey.generate().public_key()]  # the root's enrolment key rotated: the old one is out
    with pytest.raises(BatchRefused, match="not signed by an enrolment key of the root of trust"):
        check_sender(headers, "S042", rotated, now_ms=now_ms, known=known)
    assert len(known) == 0


def test_only_verified_certificates_are_remembered_and_no_more_than_the_limit(cache, tmp_path):
    credential, authorities = cache
    known, now_ms, now = VerifiedCertificates(limit=1), _now_ms(), datetime.datetime.now(datetime.UTC)
    stranger = Ed25519PrivateKey.generate()  # another central's enrolment key
    other = load_credential(credential_in(tmp_path, stranger, node_id="cache-b", role="cache"),
                            (stranger.public_key(),), now=now)
    forged = sign(other.key, other.certificate, "S042", b"batch", now_ms=now_ms)
    with pytest.raises(BatchRefused, match="not signed by an enrolment key"):
        check_sender(forged, "S042", authorities, now_ms=now_ms, known=known)
    assert len(known) == 0
    both = [*authorities, stranger.public_key()]  # two enrolment keys: both certificates verify
    for sender in (credential, other, credential):
        headers = sign(sender.key, sender.certificate, "S042", b"batch", now_ms=now_ms)
        assert check_sender(headers, "S042", both, now_ms=now_ms, known=known).key == sender.certificate.public_key()
        assert len(known) == 1
