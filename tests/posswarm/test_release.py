"""Verifying a release directory against its signed manifest, and parsing its torrent."""

import hashlib
import random
import shutil

import fastbencode
import libtorrent as lt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from posswarm.chunks import chunk_relpath
from posswarm.errors import PosswarmError
from posswarm.manifest import ManifestError
from posswarm.release import (
    ReleaseError,
    torrent_chunk_files,
    torrent_info_hashes,
    verify_chunks,
    verify_release,
)
from seeder.publish import publish

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def published(tmp_path_factory, key):
    """A pristine release to copy from (copies, so tampering never reaches the shared chunk store)."""
    base = tmp_path_factory.mktemp("pub")
    img = base / "img"
    img.write_bytes(random.Random(1).randbytes(5 * MiB))
    m = publish(img, name="pos-os", version="2026.11", private_key=key, out=base / "rel")
    other = base / "other"
    other.write_bytes(random.Random(2).randbytes(2 * MiB))
    publish(other, name="pos-os", version="2026.12", private_key=key, out=base / "rel")
    return base / "rel" / "pos-os", m


@pytest.fixture
def release(tmp_path, published):
    src, m = published
    dest = tmp_path / "2026.11"
    shutil.copytree(src / "2026.11", dest)
    return dest, m


def test_valid_release(release, key):
    rel, m = release
    assert verify_release(rel, key.public_key()) == m
    assert verify_chunks(m, rel) == []


def _info_bytes(torrent: bytes) -> bytes:
    return fastbencode.bencode(fastbencode.bdecode(torrent)[b"info"])


def test_info_hashes_and_files_agree_with_libtorrent(release):
    rel, m = release
    data = (rel / "release.torrent").read_bytes()
    ti = lt.torrent_info(lt.bdecode(data))
    v1, v2 = torrent_info_hashes(data)
    assert (v1, v2) == (hashlib.sha1(_info_bytes(data)).digest(), ti.info_hashes().v2.to_bytes())
    assert (v1, v2) == (m.info_hash_v1, m.info_hash_v2)
    layout = ti.layout()
    lt_files = {
        layout.file_path(i) for i in range(layout.num_files())
        if not layout.file_flags(i) & lt.file_storage.flag_pad_file
    }
    assert torrent_chunk_files(data) == lt_files == {chunk_relpath(c.digest) for c in m.unique_chunks()}
    assert len(lt_files) < layout.num_files()  # the hybrid torrent does have pad files, and they were skipped


def test_changed_manifest_byte(release, key):
    rel, _ = release
    path = rel / "manifest.msgpack"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ManifestError):
        verify_release(rel, key.public_key())


def test_wrong_key(release):
    rel, _ = release
    with pytest.raises(ManifestError, match="release pos-os 2026.11: manifest is signed by key [0-9a-f]{16}, not "):
        verify_release(rel, Ed25519PrivateKey.generate().public_key())


def test_swapped_torrent(release, published, key):
    rel, _ = release
    shutil.copy(published[0] / "2026.12" / "release.torrent", rel / "release.torrent")
    with pytest.raises(ReleaseError, match=r"^release pos-os 2026.11: torrent info-hash does not match the manifest \(torrent replaced\?\)$"):
        verify_release(rel, key.public_key())


def test_garbage_torrent(release, key):
    rel, _ = release
    (rel / "release.torrent").write_bytes(b"d4:infoi3e")
    with pytest.raises(ReleaseError, match="release pos-os 2026.11: torrent"):
        verify_release(rel, key.public_key())


def test_changed_chunk_byte(release, key):
    rel, m = release
    victim = m.files[0].chunks[1]
    path = rel / chunk_relpath(victim.digest)
    data = bytearray(path.read_bytes())
    data[12345] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ReleaseError, match=f"release pos-os 2026.11: chunk {victim.hex} is corrupt"):
        verify_release(rel, key.public_key())
    assert verify_chunks(m, rel) == [victim]
    assert verify_chunks(m, rel, digests=[m.files[0].chunks[0].digest]) == []


def test_missing_chunk(release, key):
    rel, m = release
    victim = m.files[0].chunks[-1]
    (rel / chunk_relpath(victim.digest)).unlink()
    with pytest.raises(ReleaseError) as info:
        verify_release(rel, key.public_key())
    assert str(info.value) == f"release pos-os 2026.11: chunk {victim.hex} is missing (re-download or re-publish)"


def test_missing_manifest_names_the_directory(tmp_path, key):
    with pytest.raises(PosswarmError, match=f"release dir {tmp_path}: cannot read manifest.msgpack"):
        verify_release(tmp_path, key.public_key())


@pytest.mark.parametrize(
    "data", [b"", b"garbage", b"de", b"d4:infod4:name6:chunksee", b"d4:infod4:name1:x5:filesi1eee", b"i99999999999999999999999e"]
)
def test_torrent_file_list_rejects_garbage(data):
    with pytest.raises(ReleaseError):
        torrent_chunk_files(data)


@pytest.mark.parametrize("data", [b"", b"garbage", b"de", b"d4:infoi3ee", b"d1:b0:1:a0:4:infodee"])
def test_info_hashes_reject_garbage_and_non_canonical(data):
    with pytest.raises(ReleaseError):
        torrent_info_hashes(data)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_fuzz_mutated_torrent_only_raises_release_error(published, data):
    good = (published[0] / "2026.11" / "release.torrent").read_bytes()
    pos = data.draw(st.integers(0, len(good) - 1))
    mutated = good[:pos] + data.draw(st.binary(max_size=6)) + good[pos + data.draw(st.integers(0, 6)) :]
    for parse in (torrent_info_hashes, torrent_chunk_files):
        try:
            parse(mutated)
        except ReleaseError:
            pass


def test_a_compressed_chunk_is_verified_by_what_it_decodes_to(tmp_path, key):
    img = tmp_path / "img"
    rng = random.Random(3)
    words = [rng.randbytes(6).hex().encode() for _ in range(500)]
    img.write_bytes(b" ".join(rng.choices(words, k=400_000)))  # compressible, like real files
    m = publish(img, name="pos-os", version="1", private_key=key, out=tmp_path / "rel")
    rel = tmp_path / "rel" / "pos-os" / "1"
    assert verify_release(rel, key.public_key()) == m
    victim = next(c for c in m.unique_chunks() if c.compressed)
    assert victim.size < victim.length // 2
    path = rel / chunk_relpath(victim.digest)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x55
    path.unlink()  # a hard link into the central store: replace, do not edit in place
    path.write_bytes(bytes(data))
    with pytest.raises(ReleaseError, match=f"release pos-os 1: chunk {victim.hex} is corrupt"):
        verify_release(rel, key.public_key())
    assert verify_chunks(m, rel) == [victim]


def test_a_release_published_before_format_2_still_verifies(tmp_path, key):
    # What a format-1 publisher left on disk: every chunk stored as it is, a manifest saying format 1.
    from dataclasses import replace

    from posswarm.manifest import sign_manifest

    img = tmp_path / "img"
    img.write_bytes(random.Random(4).randbytes(1 * MiB))  # incompressible: every chunk stored as it is
    m = publish(img, name="pos-os", version="1", private_key=key, out=tmp_path / "rel")
    rel = tmp_path / "rel" / "pos-os" / "1"
    assert not any(c.compressed for c in m.unique_chunks())
    old = sign_manifest(replace(m, format=1), key)
    (rel / "manifest.msgpack").write_bytes(old.to_bytes())
    assert verify_release(rel, key.public_key()) == old and old.format == 1
