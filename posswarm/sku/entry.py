"""One SKU catalog entry, its wire form, and the last-writer-wins rule that decides between two of them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import blake3
import msgpack

from posswarm.errors import PosswarmError
from posswarm.signed_doc import KEY_ID
from posswarm.sku.bucket import bucket_of
from posswarm.sku.hlc import MAX_HLC

SIGNATURE_SIZE = 64  # Ed25519


class InvalidSkuEntry(PosswarmError):
    """A catalog entry with a missing or out-of-range field."""


@dataclass(frozen=True, slots=True)
class SkuEntry:
    """``code`` -> its fields, stamped with the writer's ``hlc`` and ``origin`` node.

    A deletion is a tombstone (``deleted=True``) that must outlive the entry it buries,
    otherwise a replica that missed the delete would resurrect the SKU by anti-entropy.
    ``key_id`` and ``signature`` are central's Ed25519 signature over :meth:`content`
    (posswarm/sku/signature.py); empty until central's seeder signs the entry.
    """

    code: str
    hlc: int
    origin: str
    deleted: bool = False
    barcode: str = ""
    name: str = ""
    price_cents: int = 0
    tax_class: str = ""
    key_id: str = ""
    signature: bytes = b""
    # The leaf and bucket, once computed: a bulk load asks for each two or three times per entry (snapshot
    # check, merge, row).
    _leaf: bytes = dataclasses.field(default=b"", init=False, repr=False, compare=False)
    _bucket: int = dataclasses.field(default=-1, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not in_bounds(self.code, self.hlc, self.origin, self.deleted, self.barcode, self.name, self.price_cents,
                         self.tax_class, self.key_id, self.signature):
            self._check_each()

    def _check_each(self) -> None:
        """Raise naming the first field out of bounds (the check above found one, or the entry holds non-ASCII text)."""
        who = f"sku {self.code!r}"
        if not _is_text(self.code, 64) or not self.code:
            raise InvalidSkuEntry(f"{who}: code must be 1-64 characters")
        if type(self.hlc) is not int or not 0 <= self.hlc <= MAX_HLC:
            raise InvalidSkuEntry(f"{who}: hlc {self.hlc!r} is not a 63-bit timestamp")
        if not _is_text(self.origin, 64) or not self.origin:
            raise InvalidSkuEntry(f"{who}: origin must name the writing node in 1-64 characters")
        if type(self.deleted) is not bool:
            raise InvalidSkuEntry(f"{who}: deleted must be true or false")
        for field, longest in (("barcode", 64), ("name", 256), ("tax_class", 32)):
            value = getattr(self, field)
            if not _is_text(value, longest):
                raise InvalidSkuEntry(f"{who}: {field} must be text of at most {longest} characters")
        if type(self.price_cents) is not int or not 0 <= self.price_cents < 2**53:
            raise InvalidSkuEntry(f"{who}: price {self.price_cents!r} must be whole non-negative cents")
        if not (type(self.key_id) is str and (self.key_id == "" or KEY_ID.fullmatch(self.key_id))):
            raise InvalidSkuEntry(f"{who}: key id {self.key_id!r} is not a 16-hex-digit posswarm key id")
        if type(self.signature) is not bytes or len(self.signature) not in (0, SIGNATURE_SIZE):
            raise InvalidSkuEntry(f"{who}: signature must be {SIGNATURE_SIZE} bytes")

    def content(self) -> list:
        """What the entry says, without its signature: what central signs and the leaf hashes."""
        return [
            self.code, self.hlc, self.origin, self.deleted,
            self.barcode, self.name, self.price_cents, self.tax_class,
        ]  # fmt: skip

    def to_wire(self) -> list:
        return [*self.content(), self.key_id, self.signature]

    @classmethod
    def from_wire(cls, wire: object) -> SkuEntry:
        # 8 items: a sender from before signatures; it parses, and the signature check refuses it by name.
        if not isinstance(wire, (list, tuple)) or len(wire) not in (8, 10):
            raise InvalidSkuEntry("sku entry: wire form is not a 10-item list (sender on another version?)")
        return cls(*wire)

    @property
    def leaf(self) -> bytes:
        """16-byte hash of what the entry says: bucket digests are built from these.

        The signature is left out, so an entry re-signed without a new stamp would look equal to
        anti-entropy; central therefore stamps every entry it (re-)signs anew (seeder/sku.py)."""
        if not self._leaf:
            object.__setattr__(self, "_leaf", blake3.blake3(msgpack.packb(self.content())).digest(16))
        return self._leaf

    @property
    def bucket(self) -> int:
        """Which of the catalog's buckets the entry falls in (posswarm/sku/bucket.py)."""
        if self._bucket < 0:
            object.__setattr__(self, "_bucket", bucket_of(self.code))
        return self._bucket

    @property
    def version(self) -> Version:
        """Merge order. (hlc, origin) as in any LWW map; the leaf breaks the tie that a
        buggy writer reusing an HLC could create, so every replica still picks the same winner."""
        return (self.hlc, self.origin, self.leaf)


def in_bounds(code: object, hlc: object, origin: object, deleted: object, barcode: object, name: object,
              price: object, tax_class: object, kid: object, signature: object) -> bool:
    """Whether an entry's fields (in wire order) keep every bound, in one expression: a fresh till checks one per SKU
    of the catalog (15.7 us of its 1M entries' 61 us each went to the per-field check, measured). ASCII text cannot
    hold a lone surrogate, so False here (the field check then names the field, or passes other text) costs only
    text beyond ASCII an encode."""
    return (type(code) is str and 0 < len(code) <= 64 and type(origin) is str and 0 < len(origin) <= 64
            and type(barcode) is str and len(barcode) <= 64 and type(name) is str and len(name) <= 256
            and type(tax_class) is str and len(tax_class) <= 32 and (code + origin + barcode + name + tax_class).isascii()
            and type(hlc) is int and 0 <= hlc <= MAX_HLC and type(deleted) is bool
            and type(price) is int and 0 <= price < 2**53
            and type(signature) is bytes and len(signature) in (0, SIGNATURE_SIZE)
            and type(kid) is str and (kid == "" or KEY_ID.fullmatch(kid) is not None))


def _is_text(value: object, longest: int) -> bool:
    # Lone surrogates cannot be stored or sent (UTF-8), so they are refused here, not at the socket.
    if not isinstance(value, str) or len(value) > longest:
        return False
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


Version = tuple[int, str, bytes]
""":attr:`SkuEntry.version`: ``(hlc, origin, leaf)``."""


def wins(theirs: Version, mine: Version | None) -> bool:
    """Last writer wins: whether an entry of version ``theirs`` replaces the held one (``None``: none held).

    Strictly greater, so applying the same entry twice changes nothing (idempotent), and the order
    two entries arrive in never changes which one is kept (commutative).
    """
    return mine is None or theirs > mine
