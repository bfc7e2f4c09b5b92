"""Documents central signs (manifests, rollouts): strict msgpack unpacking and the Ed25519 check they share."""

from __future__ import annotations

import re

import msgpack
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from posswarm.errors import PosswarmError
from posswarm.keys import KeyRing, trusted_key

KEY_ID = re.compile(r"[0-9a-f]{16}")  # posswarm.keys.key_id: 16 hex digits
MAX_COUNT = 2**63 - 1


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
                    public_key: Ed25519PublicKey | KeyRing, error: type[PosswarmError]) -> None:
    """``error`` naming the release and both keys unless a trusted key (one, or a ring of them) signed ``signed``."""
    key, trusted = trusted_key(public_key, signer)
    if key is None:
        raise error(f"release {release_id}: {what} is signed by key {signer}, not {trusted} "
                    "(a revoked or unknown key, or the wrong root of trust configured; was it re-signed?)")
    public_key, trusted = key, signer
    try:
        if len(signature) != 64:
            raise InvalidSignature
        public_key.verify(signature, signed)
    except InvalidSignature:
        raise error(f"release {release_id}: {what} signature does not match key {trusted} "
                    "(tampered or re-signed? re-download it)") from None


class Fields:
    """Typed reads of a signed document's fields. Every failure is one ``error`` saying what is wrong,
    that the file is corrupt or not a posswarm ``what``, and to re-download it."""

    def __init__(self, what: str, error: type[PosswarmError]) -> None:
        self.what = what
        self.error = error

    def bad(self, problem: str) -> PosswarmError:
        return self.error(f"{self.what}: {problem} (corrupt or not a posswarm {self.what}; re-download it)")

    def top(self, raw: object, supported_format: int) -> dict:
        """The document's top-level map, once its format is one this build reads."""
        if not isinstance(raw, dict):
            raise self.bad("top level is not a map")
        fmt = self.take(raw, "format", int)
        if fmt != supported_format:
            raise self.error(f"{self.what}: format {fmt} is not supported (this build reads format "
                             f"{supported_format}; upgrade posswarm)")
        return raw

    def take(self, d: dict, key: str, typ: type):
        if key not in d:
            raise self.bad(f"field {key!r} is missing")
        value = d[key]
        # No field is a bool, and bool is an int subclass: a bool where a number belongs is malformed.
        if not isinstance(value, typ) or isinstance(value, bool):
            raise self.bad(f"field {key!r} has the wrong type")
        return value

    def count(self, value, what: str, *, minimum: int = 0, maximum: int = MAX_COUNT) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= maximum:
            raise self.bad(f"{what} is not an integer in [{minimum}, {maximum}]")
        return value

    def signer(self, d: dict) -> tuple[str, bytes]:
        """(key_id, signature): who signed the document and the signature (empty before signing)."""
        key = self.take(d, "key_id", str)
        if not KEY_ID.fullmatch(key):
            raise self.bad("key_id is not 16 lowercase hex chars")
        signature = self.take(d, "signature", bytes)
        if len(signature) not in (0, 64):
            raise self.bad("signature is not 64 bytes")
        return key, signature
