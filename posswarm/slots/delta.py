"""Which chunks of the next image release the booted slot already holds, and where (pure)."""

from __future__ import annotations

from dataclasses import dataclass

from posswarm.manifest import ChunkRef, Manifest


@dataclass(frozen=True)
class SlotChunk:
    """A chunk of the next release (its stored form as the next torrent names it) and where its content lies in
    the booted slot (the running release's image starts at the slot's first byte)."""

    ref: ChunkRef
    offset: int


def from_slot(next_release: Manifest, running: Manifest, have: set[bytes]) -> list[SlotChunk]:
    """The unique chunks of ``next_release`` that ``running``'s image holds and that are not in ``have`` (the
    chunks the node has as files already), each at its first offset in the running image, in slot order."""
    where: dict[bytes, int] = {}
    if running.kind == "image" and len(running.files) == 1:  # a slot holds one image, never a directory tree
        offset = 0
        for chunk in running.files[0].chunks:
            where.setdefault(chunk.digest, offset)
            offset += chunk.length
    found = [SlotChunk(ref, where[ref.digest]) for ref in next_release.unique_chunks()
             if ref.digest in where and ref.digest not in have]
    return sorted(found, key=lambda c: c.offset)  # one forward pass over the slot

