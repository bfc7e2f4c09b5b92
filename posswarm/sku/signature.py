"""Central's signature on each SKU entry: make it, and check it against the root of trust's SKU role keys."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from functools import lru_cache

import msgpack
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from posswarm import logs
from posswarm.keys import KeyRing, key_id
from posswarm.sku.entry import SkuEntry

log = logs.get("sku")

# Domain separation: these bytes can never be mistaken for a manifest, a rollout or a TUF document.
DOMAIN = b"posswarm sku entry v1\n"


def signed_bytes(entry: SkuEntry) -> bytes:
    return DOMAIN + msgpack.packb(entry.content())


def sign(entry: SkuEntry, key: Ed25519PrivateKey, kid: str | None = None) -> SkuEntry:
    """``entry`` signed by ``key`` (``kid``: its key id, when the caller signs many)."""
    return replace(entry, key_id=kid or key_id(key.public_key()), signature=key.sign(signed_bytes(entry)))


def problem(entry: SkuEntry, keys: KeyRing) -> str | None:
    """Why ``entry`` must not be applied (one line), or None when a key of ``keys`` signed exactly it."""
    return signed_problem(f"sku {entry.code!r} (hlc {entry.hlc})", entry.key_id, entry.signature, signed_bytes(entry),
                          keys, unsigned="central's seeder runs without --sku-key, or the sender is on an older version",
                          changed="price, name or stamp")


def signed_problem(who: str, kid: str, signature: bytes, message: bytes, keys: KeyRing, *, unsigned: str,
                   changed: str) -> str | None:
    """Why ``signature`` (by key ``kid``) over ``message`` is not a SKU key's of ``keys``, in one line; None if it is."""
    if not signature:
        return f"{who}: unsigned ({unsigned})"
    key = keys.get(kid)
    if key is None:
        return (f"{who}: signed by key {kid}, not the root of trust's SKU key ({', '.join(keys.ids()) or 'none'})"
                " (forged, a rotated-out key, or this node has not seen central's newest root yet)")
    try:
        _verifier(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)).verify(message, signature)
    except BadSignatureError:
        return f"{who}: signature does not match key {kid} (changed on the way: {changed})"
    return None


@lru_cache(maxsize=16)
def _verifier(raw_public_key: bytes) -> VerifyKey:
    # libsodium checks an Ed25519 signature in about half the CPU time OpenSSL takes (measured here:
    # 15.7k/s against 8.0k/s), and a fresh till checks every entry of the catalog.
    return VerifyKey(raw_public_key)


class SkuSignatures:
    """The SKU keys a node trusts (a ring that follows root rotation) and how many entries they refused."""

    def __init__(self, keys: KeyRing) -> None:
        self.keys = keys
        self.refused = 0  # since start; status reports it
        self.last_refusal: str | None = None

    def accepted(self, entries: Iterable[SkuEntry], *, source: str) -> list[SkuEntry]:
        """The entries central signed; the rest are counted and named in one log line per call."""
        good, refused, first = [], 0, None
        for entry in entries:
            why = problem(entry, self.keys)
            if why is None:
                good.append(entry)
            else:
                refused += 1
                first = first or why
        if refused:
            self.refuse(refused, first, source=source)
        return good

    def refuse(self, count: int, first: str, *, source: str) -> None:
        """Count ``count`` refused items from ``source`` and name the first; a repeat of the last refusal logs quietly."""
        self.refused += count
        # A cache asks again for a page it refused: the same refusal is logged once, and counted each time.
        report = log.debug if first == self.last_refusal else log.warning
        self.last_refusal = first
        report("sku.refused_signature", source=source, count=count, first=first,
               hint="kept the entries held before; only central's signed entries are applied")
