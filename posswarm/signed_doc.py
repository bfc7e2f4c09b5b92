"""Documents central signs (manifests, rollouts): strict msgpack unpacking and the Ed25519 check they share."""

from __future__ import annotations

import msgpack
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from posswarm.errors import PosswarmError
from posswarm.keys import key_id


def unpack(data: object, *, what: str, limit: int, error: type[PosswarmError]) -> object:
    """The msgpack value of ``data``; ``error`` (and nothing else) for anything that is not one."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise error(f"{what}: not bytes (read the file in binary mode)")
    if len(data) > limit:
        raise error(f"{what}: {len(data)} bytes exceeds the {limit} byte limit (not a {what}?)")
    try:
        return msgpack.unpackb(bytes(data), raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:  # msgpack raises a zoo of types (ValueError, StackError, ExtraData, ...)
        raise error(f"{what}: not valid msgpack ({type(exc).__name__}; re-download it)") from None


def parse_canonical(data: object, build, *, what: str, limit: int, error: type[PosswarmError]):
    """``build(unpacked)``, refusing any encoding but the one ``.to_bytes()`` of the result gives back:
    one document, one encoding, so an equivalent re-encoding (int16 for a uint16, ...) counts as tampering."""
    doc = build(unpack(data, what=what, limit=limit, error=error))
    if doc.to_bytes() != bytes(data):
        raise error(f"release {doc.release_id}: {what} is not canonically encoded (tampered or re-encoded; "
                    "re-download it)")
    return doc


def check_signature(*, release_id: str, what: str, signer: str, signature: bytes, signed: bytes,
                    public_key: Ed25519PublicKey, error: type[PosswarmError]) -> None:
    """``error`` naming the release and both keys unless the central key signed ``signed``."""
    trusted = key_id(public_key)
    if signer != trusted:
        raise error(f"release {release_id}: {what} is signed by key {signer}, not {trusted} "
                    "(wrong central.pub configured, or was it re-signed?)")
    try:
        if len(signature) != 64:
            raise InvalidSignature
        public_key.verify(signature, signed)
    except InvalidSignature:
        raise error(f"release {release_id}: {what} signature does not match key {trusted} "
                    "(tampered or re-signed? re-download it)") from None
