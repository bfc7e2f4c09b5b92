"""Where each chunk of a payload is written and how far its in-order BLAKE3 has come, as chunks arrive in any order (pure)."""

from __future__ import annotations

from dataclasses import dataclass

from posswarm.manifest import ChunkRef, Manifest


@dataclass(frozen=True)
class Place:
    """One use of a chunk in the payload: the file (index into ``manifest.files``), the offset in it, and its
    position in the payload's chunk sequence (files concatenated in manifest order, as ``payload_blake3`` hashes)."""

    file: int
    offset: int
    length: int
    position: int
    digest: bytes


class StagingPlan:
    """The chunks of one payload: which are written, which are left, and the payload's positions that may be hashed.

    The payload BLAKE3 must see the bytes in order; a chunk written ahead of the hash waits until every
    position before it is written. ``put`` answers with the positions that became hashable, in order.
    """

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self.sequence: list[Place] = []
        self.places: dict[bytes, list[Place]] = {}
        self.refs: dict[bytes, ChunkRef] = {}
        for index, entry in enumerate(manifest.files):
            offset = 0
            for chunk in entry.chunks:
                place = Place(index, offset, chunk.length, len(self.sequence), chunk.digest)
                self.sequence.append(place)
                self.places.setdefault(chunk.digest, []).append(place)
                self.refs.setdefault(chunk.digest, chunk)
                offset += chunk.length
        self.unhashed = {digest: len(places) for digest, places in self.places.items()}
        self.written: set[bytes] = set()
        self.hashed = 0  # positions the payload BLAKE3 has taken, from the start

    def wants(self, digest: bytes) -> bool:
        """A chunk of this payload not yet written."""
        return digest in self.refs and digest not in self.written

    def put(self, digest: bytes) -> list[Place]:
        """Chunk ``digest`` is written at every one of its places; the positions now hashable, in payload order."""
        if not self.wants(digest):
            return []
        self.written.add(digest)
        start = self.hashed
        while self.hashed < len(self.sequence) and (d := self.sequence[self.hashed].digest) in self.written:
            self.unhashed[d] -= 1
            self.hashed += 1
        return self.sequence[start:self.hashed]

    def needed_later(self, digest: bytes) -> bool:
        """A position of ``digest`` lies past the hashed prefix: its content is wanted again for the payload hash."""
        return self.unhashed.get(digest, 0) > 0

    def left(self) -> list[ChunkRef]:
        """Chunks not yet written, each once, in payload order."""
        return [ref for digest, ref in self.refs.items() if digest not in self.written]

    @property
    def done(self) -> bool:
        """Every position is written and hashed."""
        return self.hashed == len(self.sequence)

    @property
    def written_bytes(self) -> int:
        return sum(self.refs[d].length * len(self.places[d]) for d in self.written)
