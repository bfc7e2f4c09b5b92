"""The running release's chunks read out of the booted slot into the next release's directory: each checked
against its BLAKE3, packed again into its stored form and checked against the torrent's pieces root, so a till
seeds only bytes the torrent names. Blocking: run it from a thread."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import blake3

from posswarm.chunks import chunk_relpath, pack
from posswarm.release_torrent import file_tree
from posswarm.slots.delta import SlotChunk


@dataclass
class SlotRead:
    """What came out of the slot: chunks and stored bytes written as files, and the chunks left to the swarm."""

    chunks: int = 0
    stored_bytes: int = 0
    bad: list[SlotChunk] = field(default_factory=list)  # content failed BLAKE3: the slot changed underneath
    repacked_differently: list[SlotChunk] = field(default_factory=list)  # another zstd build: not the torrent's bytes


def read_into(slot: Path, wanted: list[SlotChunk], release_dir: Path, roots: dict[str, bytes],
              piece_size: int) -> SlotRead:
    """Each of ``wanted`` read from ``slot`` at its offset and, when it checks out, written as its chunk file in
    ``release_dir`` (``roots``: the torrent's pieces root of each chunk file, by BLAKE3 hex)."""
    done = SlotRead()
    fd = os.open(slot, os.O_RDONLY | os.O_CLOEXEC)
    try:
        for chunk in wanted:
            ref = chunk.ref
            content = os.pread(fd, ref.length, chunk.offset)
            if len(content) != ref.length or blake3.blake3(content).digest() != ref.digest:
                done.bad.append(chunk)
                continue
            stored = pack(content)
            # zstd promises no identical frames across versions: a till whose build packs differently fetches
            # the chunk instead, and never seeds bytes the torrent does not name
            if len(stored) != ref.size or file_tree(stored, piece_size).root != roots.get(ref.hex):
                done.repacked_differently.append(chunk)
                continue
            target = release_dir / chunk_relpath(ref.digest)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".slot-{ref.hex[:16]}")
            # no fsync: like a downloaded chunk, it is BLAKE3-checked again before the install uses it
            with open(tmp, "wb") as f:
                f.write(stored)
            os.replace(tmp, target)
            done.chunks += 1
            done.stored_bytes += len(stored)
    finally:
        os.close(fd)
    return done
