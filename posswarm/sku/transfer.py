"""A bulk transfer's rows into a replica: whole buckets central's snapshot vouches for written as they are, the rest
merged entry by entry, each of those on its own signature."""

from __future__ import annotations

from collections.abc import Iterable

from posswarm.sku.catalog import SkuReplica
from posswarm.sku.entry import SkuEntry
from posswarm.sku.rows import Row, row_entry
from posswarm.sku.snapshot import HeldSnapshot


def apply_rows(replica: SkuReplica, held: HeldSnapshot, rows: Iterable[Row], *, now_ms: int | None, source: str) -> int:
    """Apply ``rows`` (whole buckets, as a cache sends them) to ``replica``; return how many rows changed.

    Nothing is written before it is vouched for: a bucket by hashing to the held snapshot's digest (checked before
    :meth:`~posswarm.sku.catalog.SkuReplica.fill` sees it), every other entry by its own signature (refused ones
    are counted and named, and nothing of them kept). Runs in the replica's thread: the hashing is CPU work."""
    good, rest = held.split(rows)
    left = replica.fill(good, held.snapshot.digests, now_ms=now_ms) if good else []
    filled = sum(map(len, good.values())) - len(left)
    held.vouched += filled
    # Vouched for, but into a bucket already holding something (or too far ahead): merged, without a signature check.
    trusted = {id(entry): entry for entry in map(row_entry, left)}
    others = [row_entry(row) for row in rest]

    def check(newer: list[SkuEntry]) -> list[SkuEntry]:
        mine = [entry for entry in newer if id(entry) in trusted]
        held.vouched += len(mine)
        unvouched = [entry for entry in newer if id(entry) not in trusted] if mine else newer
        return mine + held.signatures.accepted(unvouched, source=source)

    if not trusted and not others:
        return filled
    return filled + replica.apply([*trusted.values(), *others], now_ms=now_ms, check=check, bulk=True)
