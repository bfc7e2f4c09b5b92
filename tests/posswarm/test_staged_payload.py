"""The streaming writer: chunks in any order, written once at their offsets, the payload BLAKE3 taken in order."""

from __future__ import annotations

import random

import pytest

from posswarm import install, staged_payload
from posswarm.chunks import chunk_relpath
from posswarm.errors import PosswarmError
from posswarm.keys import generate_keypair, load_private_key
from posswarm.manifest import ChunkRef, Manifest, PayloadFile, Targets
from posswarm.staged_payload import StagedPayload
from posswarm.staging_plan import StagingPlan
from seeder.publish import publish


def _manifest(files: dict[str, list[bytes]]) -> Manifest:
    """A manifest of files made of chunks named by single letters (only their order and repeats matter)."""
    entries = tuple(PayloadFile(path, 0o644, 4 * len(chunks), tuple(ChunkRef(d.ljust(32, b"."), 4) for d in chunks))
                    for path, chunks in files.items())
    return Manifest("app", "1", "app", entries, sum(f.size for f in entries), b"\0" * 32, b"\0" * 20, b"\0" * 32,
                    16384, Targets(), 0, "k")


def test_the_hash_waits_for_the_prefix_and_takes_every_position_once_in_order():
    plan = StagingPlan(_manifest({"a": [b"x", b"y", b"x"], "b": [b"z", b"y"]}))
    z, y, x = (d.ljust(32, b".") for d in (b"z", b"y", b"x"))
    assert plan.put(z) == []  # ahead of the hash: written, waits
    assert plan.needed_later(z)
    assert [p.position for p in plan.put(y)] == []
    assert [(p.file, p.offset) for p in plan.put(x)] == [(0, 0), (0, 4), (0, 8), (1, 0), (1, 4)]
    assert plan.done and not plan.left() and not plan.needed_later(z)
    assert plan.put(x) == []  # a repeated notice changes nothing
    assert plan.put(b"?" * 32) == []  # nor a chunk the payload does not have


@pytest.fixture
def release(tmp_path):
    private, _ = generate_keypair(tmp_path / "keys")
    payload = tmp_path / "app"
    (payload / "bin").mkdir(parents=True)
    (payload / "bin" / "till").write_bytes(b"#!/bin/sh\necho till\n")
    (payload / "bin" / "till").chmod(0o755)
    (payload / "data.bin").write_bytes(random.Random(7).randbytes(600_000) + bytes(300_000) + b"end")
    (payload / "empty").write_bytes(b"")
    manifest = publish(payload, name="till-app", version="1.0", private_key=load_private_key(private),
                       out=tmp_path / "releases")
    return manifest, tmp_path / "releases" / "till-app" / "1.0", payload


@pytest.mark.parametrize("keep", [staged_payload.KEEP_BYTES, 0])  # 0: every chunk ahead is read back for the hash
def test_chunks_taken_in_any_order_install_the_signed_payload(release, tmp_path, monkeypatch, keep):
    monkeypatch.setattr(staged_payload, "KEEP_BYTES", keep)
    manifest, release_dir, payload = release
    root = tmp_path / "installed" / "till-app"
    staged = StagedPayload.into_directory(manifest, install.staging_of(root, "1.0"))
    refs = manifest.unique_chunks()
    assert len(refs) > 10
    random.Random(1).shuffle(refs)
    for ref in refs[: len(refs) // 2]:
        assert staged.take(ref, release_dir) is None
    assert not staged.plan.done
    built = install.assemble(manifest, release_dir, root, staged)  # the other half is written at the end
    for name in ("bin/till", "data.bin", "empty"):
        assert (built / name).read_bytes() == (payload / name).read_bytes()
    assert (built / "bin" / "till").stat().st_mode & 0o777 == 0o755
    assert [p.name for p in root.iterdir()] == ["1.0"]


def test_a_corrupt_chunk_is_refused_and_written_once_fetched_again(release, tmp_path):
    manifest, release_dir, _ = release
    root = tmp_path / "installed" / "till-app"
    staged = StagedPayload.into_directory(manifest, install.staging_of(root, "1.0"))
    victim = manifest.files[1].chunks[0]
    path = release_dir / chunk_relpath(victim.digest)
    good = path.read_bytes()
    path.unlink()  # a hard link into the publisher's store: replace it, never edit it
    path.write_bytes(bytes(len(good)))  # same size, so libtorrent-sized checks pass; only BLAKE3 tells
    assert staged.take(victim, release_dir) is not None
    assert staged.plan.wants(victim.digest)  # nothing of it was written
    with pytest.raises(PosswarmError, match=f"chunk {victim.hex[:16]} "):
        install.assemble(manifest, release_dir, root, staged)
    assert not root.joinpath("1.0").exists() and not list(root.iterdir())

    path.unlink()
    path.write_bytes(good)  # fetched again
    staged = StagedPayload.into_directory(manifest, install.staging_of(root, "1.0"))
    assert staged.take(victim, release_dir) is None
    assert install.assemble(manifest, release_dir, root, staged).is_dir()


def test_a_slot_is_written_chunk_by_chunk_and_cut_to_the_image(tmp_path):
    from posswarm.slots import writer

    private, _ = generate_keypair(tmp_path / "keys")
    image = tmp_path / "pos.img"
    image.write_bytes(random.Random(3).randbytes(400_000) + bytes(200_000))
    manifest = publish(image, name="pos-os", version="1", private_key=load_private_key(private),
                       out=tmp_path / "releases")
    release_dir = tmp_path / "releases" / "pos-os" / "1"
    slot = tmp_path / "slot_b"
    slot.write_bytes(b"old image, longer than the new one" * 100_000)
    staged = StagedPayload.into_slot(manifest, slot)
    for ref in reversed(manifest.unique_chunks()):
        assert staged.take(ref, release_dir) is None
    assert staged.plan.done
    writer.write(manifest, release_dir, slot, staged)
    assert slot.read_bytes() == image.read_bytes()


async def test_the_stream_writes_what_the_torrent_reports_and_leaves_a_bad_chunk_for_the_refetch(release, tmp_path):
    import trio

    from posswarm.staging_stream import PayloadStream

    manifest, release_dir, payload = release
    root = tmp_path / "installed" / "till-app"
    staging = install.staging_of(root, "1.0")
    victim = manifest.files[1].chunks[3]
    path = release_dir / chunk_relpath(victim.digest)
    good = path.read_bytes()
    path.unlink()
    path.write_bytes(bytes(len(good)))  # passed the torrent's checks, rotted since: only BLAKE3 tells
    refs = manifest.unique_chunks()[::-1]  # the torrent's order is not the payload's
    async with trio.open_nursery() as nursery:
        stream = await nursery.start(PayloadStream(StagedPayload.into_directory(manifest, staging), release_dir).run)
        for piece, ref in enumerate(refs[:-2]):
            if piece % 2 and ref != victim:  # as libtorrent hands over a piece it holds in memory
                assert stream.completed(ref.hex, piece)
                stream.arrived(piece, (release_dir / chunk_relpath(ref.digest)).read_bytes())
            else:  # as a chunk file on disk
                assert not stream.completed(ref.hex)
        stream.arrived(10_000, b"a piece nobody asked for")
        stream.completed("not-a-chunk")
        stream.completed("ab" * 32)
        assert await stream.check_rest() == [victim]  # the two never reported were written; the bad one was not
        assert stream.late == 1 and stream.streamed == len(refs) - 3 and stream.staged.plan.wants(victim.digest)
        path.unlink()
        path.write_bytes(good)  # the refetch
        stream.completed(victim.hex)
        assert await stream.check_rest() == []
        built = install.assemble(manifest, release_dir, root, await stream.hand_over())
    assert (built / "data.bin").read_bytes() == (payload / "data.bin").read_bytes()


async def test_a_stopped_stream_leaves_no_staging(release, tmp_path):
    import trio

    from posswarm.staging_stream import PayloadStream

    manifest, release_dir, _ = release
    staging = install.staging_of(tmp_path / "installed" / "till-app", "1.0")
    async with trio.open_nursery() as nursery:
        stream = await nursery.start(PayloadStream(StagedPayload.into_directory(manifest, staging), release_dir).run)
        stream.completed(manifest.unique_chunks()[0].hex)
        assert staging.is_dir()
        stream.stop()
    assert not staging.exists()


def test_an_app_of_more_files_than_stay_open_is_written_whole(release, tmp_path, monkeypatch):
    monkeypatch.setattr(staged_payload, "OPEN_FILES", 1)  # every switch of file closes one and opens another
    manifest, release_dir, payload = release
    root = tmp_path / "installed" / "till-app"
    staged = StagedPayload.into_directory(manifest, install.staging_of(root, "1.0"))
    for ref in reversed(manifest.unique_chunks()):
        assert staged.take(ref, release_dir) is None
    built = install.assemble(manifest, release_dir, root, staged)
    assert (built / "data.bin").read_bytes() == (payload / "data.bin").read_bytes()
    assert (built / "bin" / "till").stat().st_mode & 0o777 == 0o755
