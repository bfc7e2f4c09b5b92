"""A store cache's signature on a batch of sales it hands central, and central's check of it (pure: no I/O; the
caller passes the time).

The cache signs, with its own node key, a context string, the store the batch is for, when it signed and the
SHA-256 of the body, and sends its certificate along (three HTTP headers). Central believes the batch only if
the certificate verifies against an enrolment key of its own root of trust, names a *cache* of exactly that
store, and the signature verifies under the certificate's key over this very body, signed recently.
The certificate and the store are checked from the headers alone, before any of the body is read.
A certificate that verified is remembered (:class:`VerifiedCertificates`): the cache's next batch skips the
certificate's parse and verification; its validity period, role, store and revocation are checked on every batch.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from posswarm.errors import PosswarmError
from posswarm.identity.certificate import MAX_CERTIFICATE_BYTES, CertifiedNode, IdentityError, load, public_key, verify
from posswarm.identity.revocations import RevokedNodes

CONTEXT = b"posswarm sales batch v1"  # a signature made for anything else never verifies as a batch
CERTIFICATE_HEADER = "x-posswarm-certificate"  # base64 DER of the cache's certificate
SIGNED_AT_HEADER = "x-posswarm-signed-at"  # ms since the epoch, when the cache signed
SIGNATURE_HEADER = "x-posswarm-signature"  # base64 Ed25519 signature over message()
# Replaying a batch stores nothing new (central dedupes); the window bounds how long a captured one replays,
# and allows for a cache clock this far off.
MAX_SKEW_MS = 10 * 60 * 1000
# Certificates remembered once verified: one per store cache of a large chain, with room for re-enrolments.
MAX_VERIFIED = 20_000


class BatchRefused(PosswarmError):
    """A batch central does not take from this sender; ``status`` is the HTTP answer (401: who is this; 403: not
    allowed to)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Sender:
    """A certified cache of the batch's store, as its headers claim; its signature is checked once the body is in."""

    identity: CertifiedNode
    key: Ed25519PublicKey
    signed_at_ms: int
    signature: bytes


@dataclass(frozen=True)
class _Verified:
    identity: CertifiedNode
    key: Ed25519PublicKey
    not_before: datetime.datetime
    not_after: datetime.datetime


class VerifiedCertificates:
    """Node certificates that verified against the enrolment keys, by their header text (at most ``limit``, the
    oldest forgotten first). Parsing and verifying one cost central ~124 µs a batch; a store's cache sends the
    same one with every batch. Only certificates that verified are kept, and all of them are forgotten when the
    enrolment keys change (a root rotated): a certificate of a key rotated out is refused at once."""

    def __init__(self, limit: int = MAX_VERIFIED) -> None:
        self.limit = limit
        self._authorities: list[Ed25519PublicKey] = []
        self._known: dict[str, _Verified] = {}

    def __len__(self) -> int:
        return len(self._known)

    def verified(self, text: str, authorities: list[Ed25519PublicKey],
                 moment: datetime.datetime) -> tuple[CertifiedNode, Ed25519PublicKey]:
        """Who the certificate in ``text`` (base64 DER) names and its key, if valid at ``moment``; IdentityError
        or BatchRefused (one line) if not."""
        if authorities != self._authorities:
            self._known, self._authorities = {}, list(authorities)
        known = self._known.get(text)
        if known is not None and not known.not_before <= moment <= known.not_after:
            del self._known[text]  # verified again below, so it is refused in verify()'s own words
            known = None
        if known is None:
            certificate = load(_b64(text, CERTIFICATE_HEADER, MAX_CERTIFICATE_BYTES))
            known = _Verified(verify(certificate, authorities, now=moment), public_key(certificate),
                              certificate.not_valid_before_utc, certificate.not_valid_after_utc)
            if len(self._known) >= self.limit:
                del self._known[next(iter(self._known))]
            self._known[text] = known
        return known.identity, known.key


def body_digest(body: bytes) -> bytes:
    return hashlib.sha256(body).digest()


def message(store: str, signed_at_ms: int, digest: bytes) -> bytes:
    return b"\n".join((CONTEXT, store.encode(), str(signed_at_ms).encode(), digest.hex().encode()))


def sign(key: Ed25519PrivateKey, certificate: x509.Certificate, store: str, body: bytes, *, now_ms: int) -> dict:
    """The three headers that carry the cache's signature on ``body`` for ``store``."""
    der = certificate.public_bytes(serialization.Encoding.DER)
    signature = key.sign(message(store, now_ms, body_digest(body)))
    return {CERTIFICATE_HEADER: base64.b64encode(der).decode(), SIGNED_AT_HEADER: str(now_ms),
            SIGNATURE_HEADER: base64.b64encode(signature).decode()}


def _b64(text: str, what: str, limit: int) -> bytes:
    if len(text) > limit * 4 // 3 + 4:
        raise BatchRefused(401, f"{what} header over {limit} bytes")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BatchRefused(401, f"{what} header is not base64") from None


def check_sender(headers: Mapping[str, str], store: str, authorities: list[Ed25519PublicKey], *,
                 now_ms: int, revoked: RevokedNodes | None = None,
                 known: VerifiedCertificates | None = None) -> Sender:
    """Who signed the batch, from its headers: a BatchRefused (one line) unless a certified cache of ``store``
    whose certificate central has not revoked. With ``known``, a certificate verified before is not verified
    again (its validity, role, store and revocation still are)."""
    what = f"sales batch for store {store}"
    cert_text, at_text, sig_text = (headers.get(h) for h in (CERTIFICATE_HEADER, SIGNED_AT_HEADER, SIGNATURE_HEADER))
    if not cert_text or not at_text or not sig_text:
        raise BatchRefused(401, f"{what}: not signed (no {CERTIFICATE_HEADER}/{SIGNATURE_HEADER}); only the store's "
                           "enrolled cache may send sales (set node.identity_dir on the cache)")
    if not authorities:
        raise BatchRefused(503, f"{what}: central's root of trust names no enrolment key; rotate one in with "
                           "`posswarm-seeder keys rotate enrolment`")
    moment = datetime.datetime.fromtimestamp(now_ms / 1000, datetime.UTC)
    try:
        identity, key = (VerifiedCertificates(1) if known is None else known).verified(cert_text, authorities, moment)
    except IdentityError as exc:
        raise BatchRefused(401, f"{what}: {exc}") from None
    if identity.role != "cache":
        raise BatchRefused(403, f"{what}: signed by {identity.describe()}; only the store's cache hands central "
                           "sales")
    if identity.store != store:
        raise BatchRefused(403, f"{what}: signed by {identity.describe()}; a cache sends only its own store's sales")
    if revoked is not None and (why := revoked.is_revoked(identity)) is not None:
        raise BatchRefused(403, f"{what}: {why}")
    if not at_text.isdigit() or len(at_text) > 16:
        raise BatchRefused(401, f"{what}: {SIGNED_AT_HEADER} {at_text[:20]!r} is not a time in ms")
    if abs(int(at_text) - now_ms) > MAX_SKEW_MS:
        raise BatchRefused(401, f"{what}: signed {(now_ms - int(at_text)) / 1000:+.0f} s from central's clock (more "
                           f"than {MAX_SKEW_MS // 60000} min); check the cache's clock (NTP)")
    return Sender(identity, key, int(at_text), _b64(sig_text, SIGNATURE_HEADER, 64))


def check_signature(sender: Sender, store: str, body: bytes) -> None:
    """The sender's signature covers exactly ``body``; a BatchRefused(401) if not (forged, or altered on the way)."""
    try:
        sender.key.verify(sender.signature, message(store, sender.signed_at_ms, body_digest(body)))
    except InvalidSignature:
        raise BatchRefused(401, f"sales batch for store {store}: the signature of {sender.identity.describe()} does "
                           "not match this body (altered on the way, or forged)") from None
