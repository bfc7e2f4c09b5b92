"""FastCDC cutting and the chunk store."""

import os
import random

import blake3
import pytest

from posswarm.chunks import CHUNK_MAX, CHUNK_MIN, ChunkStore, chunk_relpath, cuts


def random_bytes(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def cut_list(path) -> list[tuple[int, int, bytes]]:
    return [(c.offset, c.length, c.digest) for c in cuts(path)]


def verified_file(tmp_path, body: bytes, name: str = "downloaded"):
    """A file whose bytes were checked elsewhere (a finished torrent, a publish), and its digest."""
    path = tmp_path / name
    path.write_bytes(body)
    return path, blake3.blake3(body).digest()


@pytest.fixture(scope="module")
def data() -> bytes:
    return random_bytes(8 * 1024 * 1024, seed=1)


def test_cuts_cover_the_file_and_name_chunks_by_blake3(tmp_path, data):
    path = tmp_path / "img"
    path.write_bytes(data)
    found = list(cuts(path))
    assert len(found) > 3
    offset = 0
    for i, cut in enumerate(found):
        assert cut.offset == offset
        assert cut.length <= CHUNK_MAX and (cut.length >= CHUNK_MIN or i == len(found) - 1)
        assert cut.digest == blake3.blake3(data[cut.offset : cut.offset + cut.length]).digest()
        assert bytes(cut.data) == data[cut.offset : cut.offset + cut.length]
        offset += cut.length
    assert offset == len(data)


def test_same_bytes_same_cuts(tmp_path, data):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(data)
    b.write_bytes(data)
    assert cut_list(a) == cut_list(b)


def test_inserting_at_the_front_keeps_most_chunks(tmp_path, data):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(data)
    b.write_bytes(b"new header" * 777 + data)
    before = {d for _, _, d in cut_list(a)}
    after = [d for _, _, d in cut_list(b)]
    shared = sum(d in before for d in after)
    assert shared >= len(after) - 2, (shared, len(after))


def test_empty_file_has_no_chunks(tmp_path):
    (tmp_path / "e").write_bytes(b"")
    assert cut_list(tmp_path / "e") == []


def test_chunk_relpath():
    d = bytes.fromhex("3fa2" + "00" * 30)
    assert chunk_relpath(d) == "chunks/3f/3fa2" + "00" * 30


def test_store_adopt_has_and_idempotence(tmp_path):
    store = ChunkStore(tmp_path / "store")
    body = b"chunk body"
    src, d = verified_file(tmp_path, body)
    assert not store.has(d, len(body))
    path = store.adopt(src, d)
    assert path == tmp_path / "store" / chunk_relpath(d)
    assert path.read_bytes() == body and store.has(d, len(body)) and not store.has(d, len(body) + 1)
    inode = path.stat().st_ino
    other, _ = verified_file(tmp_path, body, name="again")
    store.adopt(other, d)
    assert path.stat().st_ino == inode  # not replaced
    assert list(store.digests()) == [d]
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".tmp-")]


def test_link_into_hard_links_and_reports_absence(tmp_path):
    store = ChunkStore(tmp_path / "store")
    src, d = verified_file(tmp_path, os.urandom(1000))
    assert store.link_into(d, tmp_path / "release") is False
    store.adopt(src, d)
    assert store.link_into(d, tmp_path / "release") is True
    linked = tmp_path / "release" / chunk_relpath(d)
    assert linked.stat().st_ino == store.path(d).stat().st_ino
    assert store.link_into(d, tmp_path / "release") is True  # again: fine


def test_link_into_replaces_a_wrong_file(tmp_path):
    store = ChunkStore(tmp_path / "store")
    src, d = verified_file(tmp_path, b"good")
    store.adopt(src, d)
    bad = tmp_path / "release" / chunk_relpath(d)
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"evil")
    assert store.link_into(d, tmp_path / "release")
    assert bad.read_bytes() == b"good"


def test_adopt_links_an_existing_file(tmp_path):
    store = ChunkStore(tmp_path / "store")
    src, d = verified_file(tmp_path, b"verified elsewhere")
    path = store.adopt(src, d)
    assert path.stat().st_ino == src.stat().st_ino
    assert store.has(d, src.stat().st_size)
