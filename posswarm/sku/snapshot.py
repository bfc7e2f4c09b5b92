"""Central's signed snapshot of the catalog: one signature over every bucket's digest up to a watermark stamp."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import blake3
import msgpack
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from posswarm.errors import PosswarmError
from posswarm.keys import KeyRing, key_id
from posswarm.signed_doc import KEY_ID
from posswarm.sku.bucket import BUCKETS
from posswarm.sku.entry import SIGNATURE_SIZE, SkuEntry
from posswarm.sku.hlc import MAX_HLC
from posswarm.sku.rows import BUCKET, CODE, HLC, LEAF, Row
from posswarm.sku.signature import SkuSignatures, signed_problem

# Domain separation: never mistaken for an entry's signed bytes, a manifest or a TUF document.
DOMAIN = b"posswarm sku snapshot v1\n"
DIGEST_SIZE = 16
# BUCKETS digests plus the header: a snapshot on the wire is 16 KiB and a little.
MAX_WIRE = BUCKETS * (DIGEST_SIZE + 2) + 256


class InvalidSnapshot(PosswarmError):
    """A snapshot whose shape is wrong (a sender on another version, or a corrupt one)."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Per bucket, the digest of central's signed entries stamped at or below ``watermark``, in code order.

    The digests are built as the replicas build theirs (:meth:`~posswarm.sku.catalog.SkuReplica.bucket_digests`),
    but over only the entries up to ``watermark``: a till that received a bucket whole can then check it with
    hashing, one signature for the catalog instead of one per entry. ``watermark`` is also the version: it only
    grows, as central's stamps do.
    """

    watermark: int
    digests: tuple[bytes, ...]
    key_id: str = ""
    signature: bytes = b""

    def __post_init__(self) -> None:
        if type(self.watermark) is not int or not 0 <= self.watermark <= MAX_HLC:
            raise InvalidSnapshot(f"sku snapshot: watermark {self.watermark!r} is not a 63-bit stamp")
        if (type(self.digests) is not tuple or len(self.digests) != BUCKETS
                or any(type(d) is not bytes or len(d) != DIGEST_SIZE for d in self.digests)):
            raise InvalidSnapshot(f"sku snapshot: needs {BUCKETS} digests of {DIGEST_SIZE} bytes (sender on another version?)")
        if not (type(self.key_id) is str and (self.key_id == "" or KEY_ID.fullmatch(self.key_id))):
            raise InvalidSnapshot(f"sku snapshot: key id {self.key_id!r} is not a 16-hex-digit posswarm key id")
        if type(self.signature) is not bytes or len(self.signature) not in (0, SIGNATURE_SIZE):
            raise InvalidSnapshot(f"sku snapshot: signature must be {SIGNATURE_SIZE} bytes")

    def signed_bytes(self) -> bytes:
        return DOMAIN + msgpack.packb([self.watermark, b"".join(self.digests)])

    def to_wire(self) -> bytes:
        return msgpack.packb([self.watermark, b"".join(self.digests), self.key_id, self.signature])

    @classmethod
    def from_wire(cls, wire: object) -> Snapshot:
        """Bounded before parsed: a wire form over MAX_WIRE bytes is refused unread."""
        if type(wire) is not bytes or len(wire) > MAX_WIRE:
            raise InvalidSnapshot(f"sku snapshot: wire form must be at most {MAX_WIRE} bytes")
        try:
            items = msgpack.unpackb(wire, raw=False, max_bin_len=MAX_WIRE, max_str_len=64, max_array_len=4)
        except (ValueError, msgpack.UnpackException) as exc:
            raise InvalidSnapshot(f"sku snapshot: not msgpack ({exc})") from None
        if not isinstance(items, list) or len(items) != 4 or type(items[1]) is not bytes:
            raise InvalidSnapshot("sku snapshot: wire form is not [watermark, digests, key id, signature]")
        watermark, joined, kid, signature = items
        if len(joined) != BUCKETS * DIGEST_SIZE:
            raise InvalidSnapshot(f"sku snapshot: needs {BUCKETS} digests of {DIGEST_SIZE} bytes (sender on another version?)")
        digests = tuple(joined[i : i + DIGEST_SIZE] for i in range(0, len(joined), DIGEST_SIZE))
        return cls(watermark, digests, kid, signature)


def digest(leaves: Iterable[bytes]) -> bytes:
    """A bucket's digest from its entries' leaves in code order (the same hash a replica keeps per bucket)."""
    hasher = blake3.blake3()
    for leaf in leaves:
        hasher.update(leaf)
    return hasher.digest(DIGEST_SIZE)


def build(watermark: int, leaves_by_bucket: Iterable[tuple[int, bytes]]) -> Snapshot:
    """An unsigned snapshot from ``(bucket, leaf)`` pairs in (bucket, code) order, streamed: never the catalog held."""
    hashers: dict[int, blake3.blake3] = {}
    for bucket, leaf in leaves_by_bucket:
        hashers.setdefault(bucket, blake3.blake3()).update(leaf)
    empty = digest(())
    return Snapshot(watermark, tuple(hashers[b].digest(DIGEST_SIZE) if b in hashers else empty for b in range(BUCKETS)))


def sign(snapshot: Snapshot, key: Ed25519PrivateKey) -> Snapshot:
    return Snapshot(snapshot.watermark, snapshot.digests, key_id(key.public_key()), key.sign(snapshot.signed_bytes()))


def problem(snapshot: Snapshot, keys: KeyRing, newest_watermark: int = 0) -> str | None:
    """Why ``snapshot`` must not vouch for entries (one line), or None.

    ``newest_watermark``: the newest snapshot this node took; an older one is refused, so a cache replaying last
    month's snapshot cannot even make the till do the work of checking it."""
    who = f"sku snapshot (watermark {snapshot.watermark})"
    if snapshot.watermark < newest_watermark:
        return f"{who}: older than the snapshot at {newest_watermark} this node holds (replayed by the sender?)"
    return signed_problem(who, snapshot.key_id, snapshot.signature, snapshot.signed_bytes(), keys,
                          unsigned="central has not signed it", changed="a digest or the watermark")


def vouched(snapshot: Snapshot, entries: Sequence[SkuEntry]) -> tuple[set[int], list[int]]:
    """Which of ``entries`` (by index) the snapshot vouches for, and the buckets it could not vouch for.

    A bucket is vouched for only when the entries at or below the watermark received for it hash to exactly its
    signed digest: one entry left out, added, changed or taken from another snapshot and the whole bucket is not,
    and its entries go through their own signatures instead. Entries above the watermark are never vouched for.
    """
    by_bucket: dict[int, list[tuple[str, int]]] = defaultdict(list)
    for index, entry in enumerate(entries):
        if entry.hlc <= snapshot.watermark:
            by_bucket[entry.bucket].append((entry.code, index))
    good: set[int] = set()
    mismatched: list[int] = []
    for bucket, members in sorted(by_bucket.items()):
        members.sort()
        codes = [code for code, _ in members]
        if len(set(codes)) == len(codes) and digest(entries[i].leaf for _, i in members) == snapshot.digests[bucket]:
            good.update(i for _, i in members)
        else:
            mismatched.append(bucket)
    return good, mismatched


def vouched_rows(snapshot: Snapshot, rows: Iterable[Row]) -> tuple[dict[int, list[Row]], list[Row], int]:
    """:func:`vouched` for rows (posswarm/sku/rows.py): the buckets vouched for with their rows in code order, every
    other row (above the watermark, or of a bucket that does not hash to its digest), and how many buckets did not."""
    watermark = snapshot.watermark
    by_bucket: dict[int, list[Row]] = defaultdict(list)
    rest: list[Row] = []
    for row in rows:
        if row[HLC] <= watermark:
            by_bucket[row[BUCKET]].append(row)
        else:
            rest.append(row)
    good: dict[int, list[Row]] = {}
    mismatched = 0
    for bucket, members in by_bucket.items():
        members.sort(key=lambda row: row[CODE])  # a cache sends them so (the sort then only checks it)
        if (len({row[CODE] for row in members}) == len(members)
                and digest(row[LEAF] for row in members) == snapshot.digests[bucket]):
            good[bucket] = members
        else:
            rest.extend(members)
            mismatched += 1
    return good, rest, mismatched


class HeldSnapshot:
    """The newest snapshot a node checked, and which entries it lets skip their own signature check."""

    def __init__(self, signatures: SkuSignatures) -> None:
        self.signatures = signatures
        self.snapshot: Snapshot | None = None
        self.vouched = 0  # entries checked by their bucket's digest instead of their signature, since start
        self.unvouched_buckets = 0  # buckets received that did not hash to the snapshot's digest, since start

    def take(self, snapshot: Snapshot, *, source: str) -> bool:
        """Hold ``snapshot`` if central signed it and it is not older than the one held; a refusal is counted
        with the entries' and named in one log line."""
        if self.snapshot == snapshot:
            return True
        why = problem(snapshot, self.signatures.keys, self.snapshot.watermark if self.snapshot else 0)
        if why is not None:
            self.signatures.refuse(1, why, source=source)
            return False
        self.snapshot = snapshot
        return True

    def current(self) -> Snapshot | None:
        """The held snapshot, if its key is still the root's (one rotated or revoked out vouches for nothing now)."""
        if self.snapshot is not None and self.signatures.keys.get(self.snapshot.key_id) is None:
            self.snapshot = None
        return self.snapshot

    def split(self, rows: Iterable[Row]) -> tuple[dict[int, list[Row]], list[Row]]:
        """:func:`vouched_rows` by the held snapshot: the buckets it vouches for, and the rows that must carry
        central's signature (all of them with no snapshot held)."""
        held = self.current()
        if held is None:
            return {}, list(rows)
        good, rest, mismatched = vouched_rows(held, rows)
        self.unvouched_buckets += mismatched
        return good, rest

    def check_for(self, batch: Sequence[SkuEntry], *, source: str) -> Callable[[list[SkuEntry]], list[SkuEntry]]:
        """A :meth:`~posswarm.sku.catalog.SkuReplica.apply` check for ``batch``: the entries the held snapshot vouches
        for pass; every other one must carry central's signature."""
        held = self.current()

        def check(newer: list[SkuEntry]) -> list[SkuEntry]:
            # Hashed here, in the replica's thread (apply calls this), not in the caller's event loop.
            ids: set[int] = set()
            if held is not None:
                good, mismatched = vouched(held, batch)
                ids = {id(batch[i]) for i in good}
                self.unvouched_buckets += len(mismatched)
            trusted = [entry for entry in newer if id(entry) in ids]
            self.vouched += len(trusted)
            rest = [entry for entry in newer if id(entry) not in ids] if trusted else newer
            return trusted + self.signatures.accepted(rest, source=source)

        return check
