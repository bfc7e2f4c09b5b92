"""A node's certificate: X.509, Ed25519, issued by central's enrolment key (pure: no I/O, no clock).

The certificate says who a node is — its node id, store, role (cache or device) and class (till,
kiosk, ...) — and until when. Store peers, the tracker and central believe what a node may do only
from a certificate that verifies against an enrolment key of the root of trust, never from what a
heartbeat, an mDNS record or a request claims. X.509, not a home-made format, so the same file
serves mutual TLS (gossip, central) and a signature on a request.

The claims travel in one subject-alternative-name URI, ``urn:posswarm:node:<store>:<role>:<class>:<node
id>``, every part a plain name (no colon), so parsing it is splitting it.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from posswarm.errors import PosswarmError

ROLES = ("cache", "device")
URN_PREFIX = "urn:posswarm:node:"
MAX_CERTIFICATE_BYTES = 8192  # a node certificate is ~600 bytes of PEM; anything far larger is not one
# Certificates start this far before their issue, so a node whose clock is a little behind still accepts them.
BACKDATE = datetime.timedelta(minutes=5)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_HOST = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")


class IdentityError(PosswarmError):
    """A certificate that does not prove who its holder claims to be (one line, names the reason)."""


@dataclass(frozen=True)
class CertifiedNode:
    node_id: str
    store: str
    role: str
    device_class: str
    not_after: datetime.datetime
    issued_at: datetime.datetime | None = None  # when central issued it (a revocation covers what came before)

    def urn(self) -> str:
        return f"{URN_PREFIX}{self.store}:{self.role}:{self.device_class}:{self.node_id}"

    def describe(self) -> str:
        return f"{self.role} {self.node_id} of store {self.store}"


def check_names(node_id: str, store: str, role: str, device_class: str) -> None:
    """The parts of an identity, each a plain name; a PosswarmError naming the bad one."""
    if role not in ROLES:
        raise IdentityError(f"node role {role!r}: must be one of {', '.join(ROLES)}")
    for what, value in (("node id", node_id), ("store", store), ("class", device_class)):
        if not isinstance(value, str) or not _NAME.match(value):
            raise IdentityError(f"{what} {value!r}: use 1-64 letters, digits, '.', '_' or '-' (starting with a "
                                "letter or digit)")


def _utc(moment: datetime.datetime) -> datetime.datetime:
    if moment.tzinfo is None:
        raise ValueError("times must be timezone-aware (UTC)")
    return moment.astimezone(datetime.UTC)


def authority_certificate(enrolment_key: Ed25519PrivateKey, *, now: datetime.datetime,
                          lifetime: datetime.timedelta) -> bytes:
    """A self-signed CA certificate (PEM) for ``enrolment_key``: what TLS stacks want as the trust anchor.

    Nodes trust it only because its key is an enrolment key of the root of trust (see :func:`verify`).
    """
    public = enrolment_key.public_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "posswarm node enrolment"),
                      x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, _key_hex(public)[:16])])
    start = _utc(now) - datetime.timedelta(minutes=5)  # a node's clock a little behind still accepts it
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(public)
            .serial_number(x509.random_serial_number()).not_valid_before(start)
            .not_valid_after(_utc(now) + lifetime)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(enrolment_key, None))
    return cert.public_bytes(serialization.Encoding.PEM)


def issue(enrolment_key: Ed25519PrivateKey, authority_pem: bytes, node_key: Ed25519PublicKey,
          identity: CertifiedNode, *, now: datetime.datetime) -> bytes:
    """The node's certificate (PEM) for ``node_key``, signed by ``enrolment_key``, valid until ``identity.not_after``."""
    check_names(identity.node_id, identity.store, identity.role, identity.device_class)
    authority = x509.load_pem_x509_certificate(authority_pem)
    if _key_hex(authority.public_key()) != _key_hex(enrolment_key.public_key()):
        raise IdentityError("enrolment authority certificate: it is not the enrolment key's (re-create it with "
                            "`posswarm-seeder keys init` or rotate)")
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity.node_id),
                                     x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, identity.store)]))
            .issuer_name(authority.subject).public_key(node_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(_utc(now) - BACKDATE)
            .not_valid_after(_utc(identity.not_after))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity.urn())]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(enrolment_key.public_key()),
                           critical=False)
            .sign(enrolment_key, None))
    return cert.public_bytes(serialization.Encoding.PEM)


def issue_server(enrolment_key: Ed25519PrivateKey, authority_pem: bytes, server_key: Ed25519PublicKey,
                 hosts: list[str], *, now: datetime.datetime, lifetime: datetime.timedelta) -> bytes:
    """Central's TLS server certificate (PEM) for ``hosts`` (names or IP addresses), under the enrolment
    authority every node already holds: nodes verify central's HTTPS without a second trust anchor.

    It names no posswarm node, so :func:`verify` never takes it for a node's."""
    if not hosts:
        raise IdentityError("central TLS certificate: give at least one --host (the name or address nodes use)")
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            if not _HOST.match(host):
                raise IdentityError(f"--host {host!r}: not a DNS name or an IP address") from None
            names.append(x509.DNSName(host))
    authority = x509.load_pem_x509_certificate(authority_pem)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(authority.subject).public_key(server_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(_utc(now) - datetime.timedelta(minutes=5))
            .not_valid_after(_utc(now) + lifetime)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(enrolment_key.public_key()),
                           critical=False)
            .sign(enrolment_key, None))
    return cert.public_bytes(serialization.Encoding.PEM)


def load(data: bytes) -> x509.Certificate:
    """A certificate from PEM or DER bytes, bounded first; an IdentityError for anything else."""
    if len(data) > MAX_CERTIFICATE_BYTES:
        raise IdentityError(f"node certificate: {len(data)} bytes, over {MAX_CERTIFICATE_BYTES}; not a node "
                            "certificate")
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise IdentityError(f"node certificate: unreadable ({exc})") from None


def verify(data: bytes | x509.Certificate, authorities: list[Ed25519PublicKey], *,
           now: datetime.datetime) -> CertifiedNode:
    """Who the certificate's holder is, if an enrolment key in ``authorities`` signed it and it is valid
    at ``now``; an IdentityError naming why not. Proves nothing about possession of the key: the caller
    checks that (a TLS handshake, or a signature by :func:`public_key`)."""
    cert = data if isinstance(data, x509.Certificate) else load(data)
    if not isinstance(cert.public_key(), Ed25519PublicKey):
        raise IdentityError("node certificate: its key is not Ed25519 (enrol the node again)")
    if not any(_signed_by(cert, key) for key in authorities):
        raise IdentityError("node certificate: not signed by an enrolment key of the root of trust (enrolled by "
                            "another central, or its key was rotated: enrol the node again)")
    moment = _utc(now)
    if moment < cert.not_valid_before_utc:
        raise IdentityError(f"node certificate: not valid before {cert.not_valid_before_utc:%Y-%m-%dT%H:%M:%SZ} "
                            "(is this clock right?)")
    if moment > cert.not_valid_after_utc:
        raise IdentityError(f"node certificate: expired at {cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}; enrol the "
                            "node again")
    try:
        if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            raise IdentityError("node certificate: it is a CA certificate, not a node's")
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise IdentityError("node certificate: no node name in it; not a posswarm node certificate") from None
    urns = [u for u in names.get_values_for_type(x509.UniformResourceIdentifier) if u.startswith(URN_PREFIX)]
    if len(urns) != 1:
        raise IdentityError("node certificate: it must name exactly one posswarm node (urn:posswarm:node:...)")
    parts = urns[0][len(URN_PREFIX):].split(":")
    if len(parts) != 4:
        raise IdentityError(f"node certificate: malformed node name {urns[0]!r}")
    store, role, device_class, node_id = parts
    check_names(node_id, store, role, device_class)
    return CertifiedNode(node_id=node_id, store=store, role=role, device_class=device_class,
                        not_after=cert.not_valid_after_utc, issued_at=cert.not_valid_before_utc + BACKDATE)


def public_key(cert: x509.Certificate) -> Ed25519PublicKey:
    key = cert.public_key()
    if not isinstance(key, Ed25519PublicKey):
        raise IdentityError("node certificate: its key is not Ed25519 (enrol the node again)")
    return key


def _signed_by(cert: x509.Certificate, key: Ed25519PublicKey) -> bool:
    try:
        key.verify(cert.signature, cert.tbs_certificate_bytes)
    except InvalidSignature:
        return False
    return True


def _key_hex(key) -> str:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()
