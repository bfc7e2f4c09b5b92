"""The roles of central's root of trust and their keys, as python-tuf metadata (pure: no I/O, no clock).

Roles: ``root`` (signs who holds every role), ``targets`` (release signing: lists every release, its
manifest and rollout digests), ``snapshot`` (pins the targets version), ``timestamp`` (online, short
expiry: says the snapshot is current). The root also carries a slot for the node-enrolment role key
(filled by the enrolment work) and the release keys retired by rotation, still good for the inner
signatures of manifests and rollouts published before it; a revoked key is in neither.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from securesystemslib.signer import CryptoSigner, Key, SSlibKey
from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import Metadata, Root

from posswarm.keys import KeyRing

ROLES = ("root", "targets", "snapshot", "timestamp")
ENROLMENT_FIELD = "x-posswarm-enrolment"  # {"keyids": [...], "threshold": n}; keys in root.keys
SKU_FIELD = "x-posswarm-sku"  # the online key that signs SKU changes; same shape as ENROLMENT_FIELD
# The roles posswarm adds to TUF's four, each named in root like a TUF role and rotated the same way.
EXTRA_ROLES = {"enrolment": ENROLMENT_FIELD, "sku": SKU_FIELD}
RETIRED_FIELD = "x-posswarm-retired-release-keys"  # TUF keyid -> key dict


def tuf_key(public_key: Ed25519PublicKey) -> SSlibKey:
    return SSlibKey.from_crypto(public_key)


def signer(private_key: Ed25519PrivateKey) -> CryptoSigner:
    return CryptoSigner(private_key)


def ed25519_of(key: Key) -> Ed25519PublicKey | None:
    """The cryptography key behind a TUF ed25519 key; None for any other kind (never a release key)."""
    if key.keytype != "ed25519" or not isinstance(key.keyval.get("public"), str):
        return None
    try:
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(key.keyval["public"]))
    except ValueError:
        return None


def release_keys(root: Root) -> KeyRing:
    """The keys whose inner signature a manifest or rollout may carry: the targets role's, and the retired ones."""
    keys = [root.keys[k] for k in root.roles["targets"].keyids if k in root.keys]
    retired = root.unrecognized_fields.get(RETIRED_FIELD, {})
    if isinstance(retired, dict):
        for keyid, raw in retired.items():
            try:
                keys.append(Key.from_dict(keyid, dict(raw)))
            except (KeyError, TypeError, ValueError):
                continue
    return KeyRing([k for k in (ed25519_of(key) for key in keys) if k is not None])


def role_keyids(root: Root, role: str) -> list[str]:
    if role in EXTRA_ROLES:
        slot = root.unrecognized_fields.get(EXTRA_ROLES[role], {})
        keyids = slot.get("keyids", []) if isinstance(slot, dict) else []
        return [k for k in keyids if isinstance(k, str)]
    return list(root.roles[role].keyids)


def role_public_keys(root: Root, role: str) -> list[Ed25519PublicKey]:
    """The Ed25519 keys ``root`` names for ``role`` (TUF's or posswarm's own, e.g. enrolment, sku)."""
    keys = (ed25519_of(root.keys[k]) for k in role_keyids(root, role) if k in root.keys)
    return [k for k in keys if k is not None]


def set_extra_role_key(root: Root, role: str, public_key: Ed25519PublicKey) -> None:
    """Make ``public_key`` the one key of posswarm's ``role`` in ``root`` (its old key leaves root.keys
    unless a TUF role still uses it)."""
    field = EXTRA_ROLES[role]
    old = role_keyids(root, role)
    key = tuf_key(public_key)
    root.keys[key.keyid] = key
    root.unrecognized_fields[field] = {"keyids": [key.keyid], "threshold": 1}
    in_use = {k for r in root.roles.values() for k in r.keyids}
    in_use |= {k for r in EXTRA_ROLES for k in role_keyids(root, r)}
    for keyid in old:
        if keyid not in in_use:
            root.keys.pop(keyid, None)


def public_pem(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def root_release_keys(configured: bytes, newer: bytes | None = None) -> KeyRing:
    """Release keys of the ``configured`` root (a file only root may write), or of ``newer`` when that root is
    signed by the configured root's threshold and by its own (one rotation ahead, as a node may have it).

    Anything else in ``newer`` — not a root, not signed so, not newer — is ignored: who handed it over (a
    sandboxed node's data dir) is not trusted, only the signatures. A ValueError if ``configured`` is no root.
    """
    try:
        trusted = Metadata[Root].from_bytes(configured)
        trusted.verify_delegate("root", trusted)
    except (ValueError, tuf_errors.RepositoryError) as exc:
        raise ValueError(f"not a self-signed TUF root ({exc})") from None
    if newer is not None:
        try:
            candidate = Metadata[Root].from_bytes(newer)
            trusted.verify_delegate("root", candidate)
            candidate.verify_delegate("root", candidate)
            if candidate.signed.version > trusted.signed.version:
                trusted = candidate
        except (ValueError, tuf_errors.RepositoryError):
            pass
    return release_keys(trusted.signed)
