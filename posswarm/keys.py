"""Central's Ed25519 signing keys: generate, load, name each by a short key id, and hold a set of trusted ones."""

from __future__ import annotations

import os
from pathlib import Path

import blake3
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from posswarm.errors import PosswarmError


def generate_keypair(out_dir: Path, name: str = "central") -> tuple[Path, Path]:
    """Write a new ``NAME.key`` (PEM PKCS8, 0600) and ``NAME.pub`` into ``out_dir``."""
    out_dir = Path(out_dir)
    priv_path, pub_path = out_dir / f"{name}.key", out_dir / f"{name}.pub"
    for path in (priv_path, pub_path):
        if path.exists():
            raise PosswarmError(f"key file {path}: already exists (refusing to overwrite a signing key; pick another --out)")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PosswarmError(f"key directory {out_dir}: cannot create it ({exc.strerror}; check the path and permissions)") from None
    key = Ed25519PrivateKey.generate()
    priv_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    pub_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _write_new(priv_path, priv_pem, 0o600)
    _write_new(pub_path, pub_pem, 0o644)
    return priv_path, pub_path


def _write_new(path: Path, data: bytes, mode: int) -> None:
    # O_EXCL: two keygens racing must not leave one's private key paired with the other's public key.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise PosswarmError(f"key file {path}: already exists (refusing to overwrite a signing key; pick another --out)") from None
    except OSError as exc:
        raise PosswarmError(f"key file {path}: cannot create it ({exc.strerror}; check the directory permissions)") from None
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _read_pem(path: Path, what: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise PosswarmError(f"{what} {path}: cannot read it ({exc.strerror}; check the path)") from None
    if len(data) > 64 * 1024:
        raise PosswarmError(f"{what} {path}: too large to be a PEM key (is this the right file?)")
    return data


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """The Ed25519 private key in PEM file ``path``; PosswarmError naming the file otherwise."""
    data = _read_pem(path, "private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        reason = "it is encrypted" if "encrypted" in str(exc).lower() else "not a PEM private key"
        raise PosswarmError(f"private key {path}: {reason} (generate one with `posswarm-seeder keygen`)") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise PosswarmError(f"private key {path}: not an Ed25519 key (generate one with `posswarm-seeder keygen`)")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """The Ed25519 public key in PEM file ``path``; PosswarmError naming the file otherwise."""
    data = _read_pem(path, "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        raise PosswarmError(f"public key {path}: not a PEM public key (use the central.pub written by keygen)") from None
    if not isinstance(key, Ed25519PublicKey):
        raise PosswarmError(f"public key {path}: not an Ed25519 key (use the central.pub written by keygen)")
    return key


def key_id(public_key: Ed25519PublicKey) -> str:
    """First 16 hex chars of BLAKE3 over the raw 32-byte public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return blake3.blake3(raw).hexdigest()[:16]


class KeyRing:
    """The release keys a node trusts for the inner signature of manifests and rollouts, by key id.

    Built from the root of trust (posswarm/trust/roles.py): a key the root no longer lists is not here,
    so a document signed by a revoked key fails its signature check."""

    def __init__(self, keys: list[Ed25519PublicKey]) -> None:
        self._keys = {key_id(k): k for k in keys}

    def replace(self, keys: list[Ed25519PublicKey]) -> None:
        """Take the keys of a newer root (every holder of this ring sees the change)."""
        self._keys = {key_id(k): k for k in keys}

    def keys(self) -> list[Ed25519PublicKey]:
        return list(self._keys.values())

    def get(self, kid: str) -> Ed25519PublicKey | None:
        return self._keys.get(kid)

    def ids(self) -> list[str]:
        return sorted(self._keys)


def trusted_key(trusted: Ed25519PublicKey | KeyRing, signer: str) -> tuple[Ed25519PublicKey | None, str]:
    """The key among ``trusted`` with id ``signer`` (None if none) and how to name what is trusted in an error."""
    if isinstance(trusted, KeyRing):
        return trusted.get(signer), "any release key of the root of trust (" + ", ".join(trusted.ids()) + ")"
    kid = key_id(trusted)
    return (trusted if kid == signer else None), kid
