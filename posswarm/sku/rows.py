"""A bulk transfer's SKU entries as the replica's SQLite rows: bounded, bucketed and hashed, no entry object each."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import blake3
import msgpack

from posswarm.sku.bucket import bucket_of
from posswarm.sku.entry import SkuEntry, in_bounds

Row = tuple
"""``(code, bucket, hlc, origin, deleted, barcode, name, price_cents, tax_class, leaf, key_id, signature)``: the
replica's ``sku`` columns in table order (``deleted`` 0 or 1), as written and as read back."""

CODE, BUCKET, HLC, LEAF = 0, 1, 2, 9

_pack = msgpack.Packer().pack


def row_of(wire: object) -> Row:
    """The row of an entry's wire form, every bound checked as :class:`SkuEntry` checks it (raising
    :class:`~posswarm.sku.entry.InvalidSkuEntry` naming the field), its bucket and leaf hashed from what it says."""
    if type(wire) is list and len(wire) == 10:
        code, hlc, origin, deleted, barcode, name, price, tax_class, kid, signature = wire
        if in_bounds(code, hlc, origin, deleted, barcode, name, price, tax_class, kid, signature):
            # The leaf of SkuEntry.content(): the first 8 wire fields, their types checked just above.
            leaf = blake3.blake3(_pack(wire[:8])).digest(16)
            return (code, bucket_of(code), hlc, origin, int(deleted), barcode, name, price, tax_class, leaf, kid,
                    signature)  # fmt: skip
    return entry_row(SkuEntry.from_wire(wire))  # text beyond ASCII, an older sender's 8 fields, or a field at fault


def entry_row(entry: SkuEntry) -> Row:
    return (entry.code, entry.bucket, entry.hlc, entry.origin, int(entry.deleted), entry.barcode, entry.name,
            entry.price_cents, entry.tax_class, entry.leaf, entry.key_id, entry.signature)  # fmt: skip


def row_entry(row: Row) -> SkuEntry:
    code, _, hlc, origin, deleted, barcode, name, price, tax_class, _, kid, signature = row
    return SkuEntry(code, hlc, origin, bool(deleted), barcode, name, price, tax_class, kid, bytes(signature))


def row_wire(row: Row) -> list:
    code, _, hlc, origin, deleted, barcode, name, price, tax_class, _, kid, signature = row
    return [code, hlc, origin, bool(deleted), barcode, name, price, tax_class, kid, bytes(signature)]


class SkuRows(Sequence[SkuEntry]):
    """Entries held as rows: what a frame decodes to and a cache reads to send. An entry object is built only for
    an entry looked at one by one (one not vouched for by central's snapshot, a test); equal to the same entries
    held any other way."""

    __slots__ = ("rows",)

    def __init__(self, rows: Iterable[Row]) -> None:
        self.rows: tuple[Row, ...] = tuple(rows)

    @classmethod
    def from_wires(cls, wires: Iterable[object]) -> SkuRows:
        return cls(map(row_of, wires))

    @classmethod
    def of(cls, entries: Sequence[SkuEntry]) -> SkuRows:
        return entries if isinstance(entries, SkuRows) else cls(map(entry_row, entries))

    def wires(self) -> list[list]:
        return [row_wire(row) for row in self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return SkuRows(self.rows[index])
        return row_entry(self.rows[index])

    def __iter__(self) -> Iterator[SkuEntry]:
        return map(row_entry, self.rows)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SkuRows):
            return self.rows == other.rows
        return isinstance(other, Sequence) and tuple(self) == tuple(other)

    def __hash__(self) -> int:
        return hash(tuple(self))  # as the equal tuple of entries hashes

    def __repr__(self) -> str:
        return f"SkuRows({len(self.rows)} entries)"
