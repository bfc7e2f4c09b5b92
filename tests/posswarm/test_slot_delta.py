"""The delta from the booted slot: which chunks of the next image the slot holds (pure), and reading them out of a
real loop-device slot into the next release's directory, byte for byte the publisher's chunk files, with a corrupt
block in the slot and a chunk the local zstd would pack differently left to the swarm."""

from __future__ import annotations

import re
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from posswarm import lifecycle
from posswarm.chunks import chunk_relpath, unpack
from posswarm.keys import generate_keypair, load_private_key
from posswarm.release import MANIFEST_NAME, TORRENT_NAME, torrent_chunk_roots
from posswarm.slots import delta, source
from seeder.publish import publish
from tests.posswarm import test_slots
from tests.posswarm.test_slots import NAME, boot, needs_grub
from tools.lab import change_image, write_image

till = test_slots.till  # two loop-device slots and a real grub environment


@pytest.fixture
def pair(tmp_path):
    """Two published versions of one image, the second with 5 % of it changed in three places."""
    key = load_private_key(generate_keypair(tmp_path / "keys")[0])
    one = write_image(tmp_path / "one.img", 4, seed=3)
    two = tmp_path / "two.img"
    change_image(one, two, percent=5)
    out = []
    for version, image in (("1", one), ("2", two)):
        folder = tmp_path / "payloads" / version
        folder.mkdir(parents=True)
        shutil.copy(image, folder / "pos-os.img")
        m = publish(folder / "pos-os.img", name=NAME, version=version, private_key=key, out=tmp_path / "releases")
        out.append((m, tmp_path / "releases" / NAME / version, image))
    return out


def test_the_slot_gives_each_unchanged_chunk_once_at_its_offset_and_nothing_the_node_has(pair):
    (m1, _, one), (m2, _, _) = pair
    old = {c.digest for c in m1.files[0].chunks}
    common = [c for c in m2.unique_chunks() if c.digest in old]
    assert 0 < len(common) < len(m2.unique_chunks()), "the pair shares some chunks and changes some"
    have = {common[0].digest}
    found = delta.from_slot(m2, m1, have)
    assert [c.ref.digest for c in found] != [] and {c.ref.digest for c in found} == {c.digest for c in common[1:]}
    data = one.read_bytes()
    for c in found:
        assert data[c.offset:c.offset + c.ref.length] == content_of(pair, c.ref)
    assert [c.offset for c in found] == sorted(c.offset for c in found)
    assert delta.from_slot(m2, replace(m1, kind="app"), set()) == [], \
        "a directory release is no slot's content"


def content_of(pair, ref) -> bytes:
    d2 = pair[1][1]
    return unpack((d2 / chunk_relpath(ref.digest)).read_bytes(), ref.length)


def lay_out(directory: Path, published: Path) -> None:
    directory.mkdir(parents=True)
    for name in (TORRENT_NAME, MANIFEST_NAME):
        shutil.copy(published / name, directory / name)


@needs_grub
@pytest.mark.parametrize("till", ["grub"], indirect=True)
def test_unchanged_chunks_come_out_of_the_booted_slot_as_the_torrents_bytes_and_a_corrupt_block_is_left_out(
        till, pair, tmp_path, capsys):
    (m1, d1, _), (m2, d2, _) = pair
    slots = boot(till, health_check="true")
    slots.install(m1, d1)
    kept = tmp_path / "data" / "releases" / NAME / "1"
    shutil.copytree(d1, kept)  # as the node laid it out and downloaded it
    slots = boot(till, health_check="true")  # the reboot: 1 runs confirmed from slot b, its chunk files go
    assert (slots.booted, slots.keeps(m1), slots.keeps(m2)) == ("b", True, False)
    kept = tmp_path / "data" / "releases" / NAME / "1"
    assert (kept / MANIFEST_NAME).exists() and not list(kept.rglob("chunks/*/*")), "a second copy of the OS stayed"

    wanted = delta.from_slot(m2, m1, set())
    victim = wanted[len(wanted) // 2]
    with open(till.slots[1], "r+b") as f:  # one block of the running OS changed underneath
        f.seek(victim.offset + 100)
        f.write(b"\xff" * 16)
    here = tmp_path / "data" / "releases" / NAME / "2"
    lay_out(here, d2)
    records = [replace(lifecycle.listed(NAME, "1", 0.0), manifest=m1)]
    read = slots.read_chunks(m2, records, here)
    assert read == sum(c.ref.size for c in wanted if c is not victim)
    for c in wanted:
        mine = here / chunk_relpath(c.ref.digest)
        if c is victim:
            assert not mine.exists(), "a chunk that failed BLAKE3 must come from the swarm, never from the slot"
        else:
            assert mine.read_bytes() == (d2 / chunk_relpath(c.ref.digest)).read_bytes()
    logged = capsys.readouterr()
    lines = [line for line in (logged.out + logged.err).splitlines() if "slot.chunks_bad" in line]
    assert len(lines) == 1 and victim.ref.hex[:16] in lines[0] and re.search(r"slot='?b'?", lines[0]), lines


def test_a_chunk_this_zstd_packs_into_other_bytes_than_the_torrent_names_is_not_written(pair, tmp_path):
    (m1, _, one), (m2, d2, _) = pair
    wanted = delta.from_slot(m2, m1, set())
    roots = torrent_chunk_roots((d2 / TORRENT_NAME).read_bytes())
    assert {c.ref.hex for c in wanted} <= set(roots)
    roots[wanted[0].ref.hex] = bytes(32)  # what another zstd build's frame would hash to: not the torrent's root
    read = source.read_into(one, wanted, tmp_path / "next", roots, m2.piece_size)
    assert [c.ref.digest for c in read.repacked_differently] == [wanted[0].ref.digest]
    assert read.chunks == len(wanted) - 1
    assert not (tmp_path / "next" / chunk_relpath(wanted[0].ref.digest)).exists()


@needs_grub
@pytest.mark.parametrize("till", ["grub"], indirect=True)
def test_a_slot_that_cannot_be_read_costs_the_delta_not_the_update(till, pair, tmp_path, capsys):
    (m1, d1, _), (m2, d2, _) = pair
    slots = boot(till, health_check="true")
    slots.install(m1, d1)
    slots = boot(till, health_check="true")
    slots.paths["b"] = tmp_path / "no-such-slot"  # the booted slot's device went away
    here = tmp_path / "data" / "releases" / NAME / "2"
    lay_out(here, d2)
    assert slots.read_chunks(m2, [replace(lifecycle.listed(NAME, "1", 0.0), manifest=m1)], here) == 0
    assert not list(here.rglob("chunks/*/*"))
    logged = capsys.readouterr()
    assert "slot.read_failed" in logged.out + logged.err
