"""FastCDC cutting and the chunk store."""

import os
import random

import blake3
import pytest

from posswarm.chunks import (
    CHUNK_MAX,
    CHUNK_MIN,
    ChunkError,
    ChunkStore,
    chunk_relpath,
    cuts,
    pack,
    read_content,
    unpack,
)


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


def text_bytes(n: int, seed: int) -> bytes:
    """Compressible like real files are: words from a small vocabulary."""
    rng = random.Random(seed)
    words = [rng.randbytes(rng.randint(2, 9)).hex() for _ in range(300)]
    out = bytearray()
    while len(out) < n:
        out += " ".join(rng.choices(words, k=12)).encode() + b"\n"
    return bytes(out[:n])


def test_a_compressible_chunk_is_stored_as_a_zstd_frame_and_decodes_to_its_content():
    content = text_bytes(200_000, seed=3)
    stored = pack(content)
    assert len(stored) < len(content) // 2 and stored[:4] == b"\x28\xb5\x2f\xfd"
    assert unpack(stored, len(content)) == content
    assert pack(content) == stored  # pinned level, one thread: the same chunk always stores the same bytes


def test_an_incompressible_chunk_is_stored_as_it_is(data):
    content = data[:100_000]
    assert pack(content) == content
    assert unpack(content, len(content)) == content


def test_decoding_is_bounded_by_the_manifest_length_and_refuses_anything_else():
    content = text_bytes(100_000, seed=4)
    stored = pack(content)
    bomb = pack(b"\0" * (64 * 1024 * 1024))  # 64 MiB of zeros in a few KiB: a hostile peer's offer
    with pytest.raises(ChunkError, match="zstd frame of 67108864 bytes .*not of 100000 bytes"):
        unpack(bomb, len(content))
    with pytest.raises(ChunkError, match="not a zstd frame"):
        unpack(b"\0" * 100, len(content))
    with pytest.raises(ChunkError, match="does not decompress"):
        unpack(stored[:-5], len(content))
    with pytest.raises(ChunkError, match="does not decompress"):
        unpack(stored[:-5] + b"junk\0", len(content))  # same size, wrong bytes
    with pytest.raises(ChunkError, match="does not decompress"):
        unpack(stored + b"xy", len(content))  # trailing bytes a scrub must notice
    with pytest.raises(ChunkError, match="stored bytes for"):
        unpack(content + b"!", len(content))


def test_read_content_checks_the_stored_size_first(tmp_path):
    content = text_bytes(50_000, seed=5)
    path = tmp_path / "c"
    path.write_bytes(pack(content) + b"grown")
    with pytest.raises(ChunkError, match=f"has {path.stat().st_size} bytes, not {path.stat().st_size - 5}"):
        read_content(path, path.stat().st_size - 5, len(content))
    path.write_bytes(pack(content))
    assert read_content(path, path.stat().st_size, len(content)) == content


def test_link_into_with_a_size_refuses_another_stored_form(tmp_path):
    store = ChunkStore(tmp_path / "store")
    content = text_bytes(50_000, seed=6)
    d = blake3.blake3(content).digest()
    store.adopt(verified_file(tmp_path, content)[0], d)  # stored as it is (a format-1 publish)
    assert store.stored_size(d) == len(content)
    assert store.link_into(d, tmp_path / "release", size=len(pack(content))) is False
    assert not (tmp_path / "release" / chunk_relpath(d)).exists()
    assert store.link_into(d, tmp_path / "release", size=len(content)) is True
