"""The messages store nodes gossip, as frozen dataclasses with a msgpack-ready body."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from posswarm.sales.model import Sale
from posswarm.sku.entry import SkuEntry
from posswarm.sku.rows import SkuRows
from posswarm.sku.snapshot import Snapshot


class BadBody(ValueError):
    """The body does not have the shape its kind promises (frames turns it into ``malformed``)."""


def _check(condition: bool, what: str) -> None:
    if not condition:
        raise BadBody(what)


def _is_int(value: object) -> bool:
    return type(value) is int and value >= 0


def _is_text(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 64


def _items(body: object, width: int | None = None) -> list:
    _check(isinstance(body, list), "body is not a list")
    if width is not None:
        _check(all(isinstance(item, list) and len(item) == width for item in body), f"items need {width} fields")
    return body


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """I am alive: mDNS cannot tell a crashed till from a quiet one for ~19 min (notes §3c).

    ``port`` is the sender's gossip listen port: with the connection's source address it lets a
    node answer a peer it has only heard, never resolved by mDNS (multicast blocked, or not yet).
    """

    KIND: ClassVar[str] = "heartbeat"
    node: str
    role: str
    now_ms: int
    port: int = 0

    def to_body(self) -> list:
        return [self.node, self.role, self.now_ms, self.port]

    @classmethod
    def from_body(cls, body: object) -> Heartbeat:
        _check(isinstance(body, list) and len(body) == 4, "heartbeat needs 4 fields")
        node, role, now_ms, port = body
        _check(_is_text(node) and _is_text(role) and _is_int(now_ms), "heartbeat field types")
        _check(_is_int(port) and port <= 65535, "heartbeat port")
        return cls(node, role, now_ms, port)


@dataclass(frozen=True, slots=True)
class Hello:
    """Here I am, and here is my gossip port: all a node sends to a peer it knows only from mDNS or a seed.

    Sending it means a TLS handshake, which shows the receiver's certificate to the sender and the sender's
    to the receiver; the receiver answers with a heartbeat. ``node`` and ``role`` must match the sender's
    certificate or the frame is dropped. Same fields as a heartbeat, but it is not one: it carries no
    clock, is sent at a slow, backed-off rate, and makes nobody count the peer alive.
    """

    KIND: ClassVar[str] = "hello"
    node: str
    role: str
    port: int

    def to_body(self) -> list:
        return [self.node, self.role, self.port]

    @classmethod
    def from_body(cls, body: object) -> Hello:
        _check(isinstance(body, list) and len(body) == 3, "hello needs 3 fields")
        node, role, port = body
        _check(_is_text(node) and _is_text(role) and _is_int(port) and port <= 65535, "hello field types")
        return cls(node, role, port)


@dataclass(frozen=True, slots=True)
class SalesPush:
    """Sales the sender holds un-acked (its own, or replicas it carries for another till)."""

    KIND: ClassVar[str] = "sales.push"
    sales: tuple[Sale, ...]

    def to_body(self) -> list:
        return [sale.to_wire() for sale in self.sales]

    @classmethod
    def from_body(cls, body: object) -> SalesPush:
        return cls(tuple(Sale.from_wire(wire) for wire in _items(body)))


@dataclass(frozen=True, slots=True)
class SalesAck:
    """The cache stored every sale of ``(device, incarnation)`` up to ``hwm``."""

    KIND: ClassVar[str] = "sales.ack"
    device: str
    incarnation: str
    hwm: int

    def to_body(self) -> list:
        return [self.device, self.incarnation, self.hwm]

    @classmethod
    def from_body(cls, body: object) -> SalesAck:
        _check(isinstance(body, list) and len(body) == 3, "sales ack needs 3 fields")
        device, incarnation, hwm = body
        _check(_is_text(device) and _is_text(incarnation) and _is_int(hwm), "sales ack field types")
        return cls(device, incarnation, hwm)


@dataclass(frozen=True, slots=True)
class SalesDigest:
    """Scuttlebutt digest: the cache's contiguous high-water mark per ``(device, incarnation)``."""

    KIND: ClassVar[str] = "sales.digest"
    hwms: Mapping[tuple[str, str], int]

    def to_body(self) -> list:
        return [[device, incarnation, hwm] for (device, incarnation), hwm in sorted(self.hwms.items())]

    @classmethod
    def from_body(cls, body: object) -> SalesDigest:
        hwms = {}
        for device, incarnation, hwm in _items(body, 3):
            _check(_is_text(device) and _is_text(incarnation) and _is_int(hwm), "sales digest field types")
            hwms[(device, incarnation)] = hwm
        return cls(hwms)


@dataclass(frozen=True, slots=True)
class SkuDigest:
    """The sender's SKU bucket digests (16 bytes each, in bucket order)."""

    KIND: ClassVar[str] = "sku.digest"
    buckets: tuple[bytes, ...]

    def to_body(self) -> list:
        return list(self.buckets)

    @classmethod
    def from_body(cls, body: object) -> SkuDigest:
        buckets = _items(body)
        _check(all(isinstance(b, bytes) and len(b) == 16 for b in buckets), "sku digests are 16 bytes")
        return cls(tuple(buckets))


@dataclass(frozen=True, slots=True)
class SkuEntries:
    """Catalog entries (tombstones included) answering a request or pushing a change.

    Each carries central's signature (``key_id``, ``signature``): the receiver applies only what a key
    of the root's SKU role signed, so a relaying node can leave an entry out but never change one. The first
    frame of a bulk transfer also carries central's signed catalog snapshot (posswarm/sku/snapshot.py), which
    lets the receiver check whole buckets by hashing instead of each entry's signature. Received, the entries are
    :class:`~posswarm.sku.rows.SkuRows`: checked and hashed, but no object built for each (a fresh till gets 1M)."""

    KIND: ClassVar[str] = "sku.entries"
    entries: Sequence[SkuEntry]
    snapshot: Snapshot | None = None

    def to_body(self) -> list | dict:
        if isinstance(self.entries, SkuRows):
            entries = self.entries.wires()
        else:
            entries = [entry.to_wire() for entry in self.entries]
        return entries if self.snapshot is None else {"entries": entries, "snapshot": self.snapshot.to_wire()}

    @classmethod
    def from_body(cls, body: object) -> SkuEntries:
        snapshot = None
        if isinstance(body, dict):
            _check(set(body) == {"entries", "snapshot"}, "body needs entries and snapshot")
            snapshot, body = Snapshot.from_wire(body["snapshot"]), body["entries"]
        return cls(SkuRows.from_wires(_items(body)), snapshot)


@dataclass(frozen=True, slots=True)
class SkuRequest:
    """Send me every entry in these buckets (ours and yours differ there)."""

    KIND: ClassVar[str] = "sku.request"
    buckets: tuple[int, ...]

    def to_body(self) -> list:
        return list(self.buckets)

    @classmethod
    def from_body(cls, body: object) -> SkuRequest:
        buckets = _items(body)
        _check(all(_is_int(b) for b in buckets), "sku buckets are non-negative integers")
        return cls(tuple(buckets))


Message = Heartbeat | Hello | SalesPush | SalesAck | SalesDigest | SkuDigest | SkuEntries | SkuRequest
KINDS: dict[str, type] = {kind.KIND: kind for kind in Message.__args__}
