"""What a node sends central to enrol with a one-time token, and what central answers (pure: no I/O, no clock).

The node makes its key and sends only a certificate signing request (PKCS #10) for it: the private key never
leaves the till, and the request's own signature proves the node holds the key it asks central to certify.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import NameOID

from posswarm.identity.certificate import MAX_CERTIFICATE_BYTES, IdentityError

MAX_REQUEST_BYTES = 16 * 1024  # a token, a ~400-byte CSR and three names
ENROL_PATH = "/enroll"


@dataclass(frozen=True)
class EnrolmentRequest:
    token: str
    node_id: str
    public_key: Ed25519PublicKey
    store: str = ""  # what the node expects to become ('' = whatever its token grants)
    role: str = ""
    device_class: str = ""


def build(key: Ed25519PrivateKey, *, token: str, node_id: str, store: str = "", role: str = "",
          device_class: str = "") -> bytes:
    """The JSON body of ``POST /enroll`` for ``key``."""
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_id)]))
           .sign(key, None))
    return json.dumps({"token": token, "csr": csr.public_bytes(serialization.Encoding.PEM).decode(),
                       "store": store, "role": role, "class": device_class}).encode()


def parse(body: bytes) -> EnrolmentRequest:
    """A checked request (size, shape, the CSR's own signature, an Ed25519 key); an IdentityError naming the fault."""
    if len(body) > MAX_REQUEST_BYTES:
        raise IdentityError(f"enrolment request: {len(body)} bytes, over {MAX_REQUEST_BYTES}")
    try:
        doc = json.loads(body)
    except ValueError:
        raise IdentityError("enrolment request: not JSON; use `posswarm enroll`") from None
    if not isinstance(doc, dict) or not all(isinstance(doc.get(k, ""), str) for k in ("token", "csr", "store", "role",
                                                                                      "class")):
        raise IdentityError("enrolment request: want an object of strings token, csr, store, role, class")
    try:
        csr = x509.load_pem_x509_csr(doc.get("csr", "").encode())
    except ValueError as exc:
        raise IdentityError(f"enrolment request: the csr is not a PEM certificate signing request ({exc})") from None
    if not csr.is_signature_valid:
        raise IdentityError("enrolment request: the csr's signature does not match its key (it must be signed by "
                            "the node's own key)")
    key = csr.public_key()
    if not isinstance(key, Ed25519PublicKey):
        raise IdentityError("enrolment request: the csr's key is not Ed25519")
    names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1 or not isinstance(names[0].value, str):
        raise IdentityError("enrolment request: the csr must name the node id as its one common name")
    return EnrolmentRequest(token=doc.get("token", ""), node_id=names[0].value, public_key=key,
                            store=doc.get("store", ""), role=doc.get("role", ""), device_class=doc.get("class", ""))


def answer(certificate: bytes, authority: bytes) -> bytes:
    return json.dumps({"certificate": certificate.decode(), "authority": authority.decode()}).encode()


def parse_answer(body: bytes) -> tuple[bytes, bytes]:
    """(certificate PEM, authority PEM) from central's answer; an IdentityError for anything else."""
    if len(body) > 4 * MAX_CERTIFICATE_BYTES:
        raise IdentityError(f"enrolment answer: {len(body)} bytes; not a posswarm seeder's answer")
    try:
        doc = json.loads(body)
        return doc["certificate"].encode(), doc["authority"].encode()
    except (ValueError, KeyError, TypeError, AttributeError):
        raise IdentityError("enrolment answer: not the certificate and authority JSON; is this a posswarm "
                            "seeder?") from None
