"""Issuing node credentials: a node's own key and the certificate central's enrolment key signs for it."""

from __future__ import annotations

import datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from posswarm.errors import PosswarmError
from posswarm.identity.certificate import CertifiedNode, check_names, issue
from posswarm.identity.credential import write_credential
from posswarm.keys import load_private_key

DEFAULT_LIFETIME = datetime.timedelta(days=365)
ENROLMENT_KEY, AUTHORITY_IN_KEYS = "enrolment.key", "enrolment-ca.crt"  # in central's keys directory


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
