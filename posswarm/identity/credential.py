"""This node's own credential: its key, its certificate and the enrolment authority, read from one directory.

``posswarm-seeder enroll --out DIR`` and ``posswarm enroll`` write the three files; the node reads them
at start and checks them against the root of trust it holds, so a credential from another central, an
expired one, or one issued for a different node, store or role stops the node with a one-line reason
before anything trusts it.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from posswarm.fsync import replace_synced
from posswarm.identity.certificate import CertifiedNode, IdentityError, load, verify
from posswarm.identity.revocations import RevokedNodes

KEY_FILE, CERTIFICATE_FILE, AUTHORITY_FILE = "node.key", "node.crt", "authority.crt"
MAX_FILE_BYTES = 16 * 1024


@dataclass(frozen=True)
class Credential:
    """What this node proves itself with, and what it checks others against."""

    dir: Path
    key: Ed25519PrivateKey
    certificate: x509.Certificate
    identity: CertifiedNode
    authorities: tuple[Ed25519PublicKey, ...]
    # Central's revoked node certificates (the node's CentralTrust.revoked, replaced in place at each refresh).
    revoked: RevokedNodes = field(default_factory=RevokedNodes)

    @property
    def certificate_path(self) -> Path:
        return self.dir / CERTIFICATE_FILE

    @property
    def key_path(self) -> Path:
        return self.dir / KEY_FILE

    @property
    def authority_path(self) -> Path:
        return self.dir / AUTHORITY_FILE

    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)


def _read(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise IdentityError(f"node credential {path}: cannot read it ({exc.strerror}); enrol the node with "
                            "`posswarm enroll` or `posswarm-seeder enroll`") from None
    if len(data) > MAX_FILE_BYTES:
        raise IdentityError(f"node credential {path}: over {MAX_FILE_BYTES} bytes; not a credential file")
    return data


def load_credential(directory: Path, authorities: tuple[Ed25519PublicKey, ...], *,
                    now: datetime.datetime, revoked: RevokedNodes | None = None) -> Credential:
    """Read and check DIR/node.key, node.crt and authority.crt against the root of trust's enrolment keys."""
    directory = Path(directory)
    if not authorities:
        raise IdentityError("root of trust: names no enrolment key; rotate it in with `posswarm-seeder keys rotate "
                            "enrolment`")
    certificate = load(_read(directory / CERTIFICATE_FILE))
    identity = verify(certificate, list(authorities), now=now)
    key_path = directory / KEY_FILE
    key_pem = _read(key_path)
    if os.stat(key_path).st_mode & 0o077:
        raise IdentityError(f"node credential {key_path}: readable by other users; chmod 600 it")
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except ValueError as exc:
        raise IdentityError(f"node credential {key_path}: not a PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise IdentityError(f"node credential {key_path}: not an Ed25519 key")
    raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
    if key.public_key().public_bytes(*raw) != certificate.public_key().public_bytes(*raw):
        raise IdentityError(f"node credential {directory}: node.key is not the key node.crt was issued for; "
                            "enrol the node again")
    authority = x509.load_pem_x509_certificate(_read(directory / AUTHORITY_FILE))
    if authority.public_key().public_bytes(*raw) not in {a.public_bytes(*raw) for a in authorities}:
        raise IdentityError(f"node credential {directory / AUTHORITY_FILE}: not an enrolment key of the root of "
                            "trust; enrol the node again")
    return Credential(dir=directory, key=key, certificate=certificate, identity=identity, authorities=authorities,
                      revoked=revoked if revoked is not None else RevokedNodes())


def check_matches(identity: CertifiedNode, *, node_id: str, store: str, role: str) -> None:
    """The node's configuration and its certificate must name the same node; a one-line IdentityError if not."""
    for what, configured, certified in (("node.id", node_id, identity.node_id), ("node.store", store, identity.store),
                                        ("node.role", role, identity.role)):
        if configured != certified:
            raise IdentityError(f"node credential: certificate is for {what} {certified!r}, configuration says "
                                f"{configured!r}; fix the configuration or enrol this node as {configured!r}")


def write_credential(out: Path, node_key: Ed25519PrivateKey, certificate: bytes, authority: bytes) -> Path:
    """DIR/node.key (0600), node.crt and authority.crt, each written whole or not at all."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    pem = node_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())
    replace_synced(out / KEY_FILE, pem, mode=0o600)
    replace_synced(out / CERTIFICATE_FILE, certificate)
    replace_synced(out / AUTHORITY_FILE, authority)
    return out
