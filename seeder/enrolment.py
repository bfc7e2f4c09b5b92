"""Issuing node credentials: a node's own key and the certificate central's enrolment key signs for it."""

from __future__ import annotations

import datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from posswarm.errors import PosswarmError
from posswarm.fsync import replace_synced
from posswarm.identity.certificate import CertifiedNode, check_names, issue, issue_server
from posswarm.identity.credential import write_credential
from posswarm.keys import load_private_key

DEFAULT_LIFETIME = datetime.timedelta(days=365)
ENROLMENT_KEY, AUTHORITY_IN_KEYS = "enrolment.key", "enrolment-ca.crt"  # in central's keys directory
TLS_CERTIFICATE, TLS_KEY = "tls.crt", "tls.key"  # central's HTTPS, in the keys directory


def certify(keys_dir: Path, node_key: Ed25519PublicKey, *, node_id: str, store: str, role: str, device_class: str,
            lifetime: datetime.timedelta = DEFAULT_LIFETIME) -> tuple[bytes, bytes]:
    """(certificate PEM, authority PEM) for ``node_key``, signed by KEYS/enrolment.key."""
    return certify_with(Path(keys_dir) / ENROLMENT_KEY, node_key, node_id=node_id, store=store, role=role,
                        device_class=device_class, lifetime=lifetime)


def certify_with(enrolment_key: Path, node_key: Ed25519PublicKey, *, node_id: str, store: str, role: str,
                 device_class: str, lifetime: datetime.timedelta = DEFAULT_LIFETIME) -> tuple[bytes, bytes]:
    """As :func:`certify`, with the enrolment key file named (its authority certificate lies beside it).

    Both files are read on every call: ``keys rotate enrolment`` replaces them under a running seeder.
    """
    check_names(node_id, store, role, device_class)
    now = datetime.datetime.now(datetime.UTC)
    authority_path = Path(enrolment_key).with_name(AUTHORITY_IN_KEYS)
    try:
        authority = authority_path.read_bytes()
    except OSError as exc:
        raise PosswarmError(f"enrolment authority {authority_path}: cannot read it ({exc.strerror}); it lies beside "
                            "enrolment.key after `posswarm-seeder keys init`") from None
    claims = CertifiedNode(node_id=node_id, store=store, role=role, device_class=device_class, not_after=now + lifetime)
    certificate = issue(load_private_key(Path(enrolment_key)), authority, node_key, claims, now=now)
    return certificate, authority


def enrol(keys_dir: Path, out: Path, *, node_id: str, store: str, role: str, device_class: str,
          lifetime: datetime.timedelta = DEFAULT_LIFETIME) -> Path:
    """A new key for the node and its certificate, written to ``out`` (what the lab and netsim give each node)."""
    key = Ed25519PrivateKey.generate()
    certificate, authority = certify(keys_dir, key.public_key(), node_id=node_id, store=store, role=role,
                                     device_class=device_class, lifetime=lifetime)
    return write_credential(out, key, certificate, authority)


def issue_tls(keys_dir: Path, hosts: list[str], *, days: int = 365, out: Path | None = None) -> None:
    """OUT/tls.key (a new key, 0600) and OUT/tls.crt for ``hosts``, signed by the enrolment key (OUT: KEYS)."""
    keys_dir = Path(keys_dir)
    out = keys_dir if out is None else Path(out)
    try:
        authority = (keys_dir / AUTHORITY_IN_KEYS).read_bytes()
        enrolment_key = load_private_key(keys_dir / ENROLMENT_KEY)
    except OSError as exc:
        raise PosswarmError(f"keys directory {keys_dir}: no enrolment key or authority ({exc.strerror}); run "
                            "`posswarm-seeder keys init` first") from None
    key = Ed25519PrivateKey.generate()
    now = datetime.datetime.now(datetime.UTC)
    certificate = issue_server(enrolment_key, authority, key.public_key(), list(hosts), now=now,
                               lifetime=datetime.timedelta(days=days))
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    out.mkdir(parents=True, exist_ok=True)
    replace_synced(out / TLS_KEY, pem, mode=0o600)
    replace_synced(out / TLS_CERTIFICATE, certificate + authority)  # the chain a client is shown
