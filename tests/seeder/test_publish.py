"""Publishing files and directories as releases, and chunk reuse between versions."""

import random
import time

import blake3
import libtorrent as lt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from posswarm.chunks import chunk_relpath, unpack
from posswarm.errors import PosswarmError
from posswarm.manifest import Targets, verify_manifest
from posswarm.release import verify_release
from seeder.publish import publish, publish_release

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def write_random(path, size, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


def test_publish_image(tmp_path, key):
    img = write_random(tmp_path / "pos-os.img", 3 * MiB + 17, seed=1)
    seen = []
    m = publish(
        img, name="pos-os", version="2026.11", private_key=key, out=tmp_path / "rel",
        targets=Targets(("s-0042",), ("till",), "pilot"), progress=lambda d, t: seen.append((d, t)), now=1_800_000_000,
    )
    rel = tmp_path / "rel" / "pos-os" / "2026.11"
    assert verify_manifest((rel / "manifest.msgpack").read_bytes(), key.public_key()) == m
    assert (m.kind, m.total_size, m.created, m.targets.stores) == ("image", img.stat().st_size, 1_800_000_000, ("s-0042",))
    assert [f.path for f in m.files] == ["image.bin"]
    assert m.payload_blake3 == blake3.blake3(img.read_bytes()).digest()
    assembled = b"".join((rel / chunk_relpath(c.digest)).read_bytes() for c in m.files[0].chunks)
    assert assembled == img.read_bytes()
    assert verify_release(rel, key.public_key()) == m
    assert seen[-1][0] == seen[-1][1] and all(a[0] <= b[0] for a, b in zip(seen, seen[1:]))
    assert sorted(p.name for p in (tmp_path / "rel").iterdir()) == [".chunks", "pos-os"]  # no temp dir left


def test_libtorrent_accepts_the_release_as_complete(tmp_path, key):
    img = write_random(tmp_path / "img", 6 * MiB, seed=2)  # several chunks
    m = publish(img, name="pos-os", version="1", private_key=key, out=tmp_path / "rel")
    rel = tmp_path / "rel" / "pos-os" / "1"
    atp = lt.load_torrent_buffer((rel / "release.torrent").read_bytes())
    assert atp.ti.info_hashes().v2.to_bytes() == m.info_hash_v2
    assert not atp.ti.info_hashes().has_v1()  # v2 only: no pad bytes on the wire
    atp.save_path = str(rel)
    ses = lt.session({"listen_interfaces": "127.0.0.1:0", "enable_dht": False, "enable_lsd": False,
                      "enable_upnp": False, "enable_natpmp": False})
    h = ses.add_torrent(atp)
    deadline = time.monotonic() + 20
    # A full hash check of the files on disk against v1 and v2 hashes: seeding means every piece passed.
    while not h.status().is_seeding:
        assert time.monotonic() < deadline, h.status().state
        ses.wait_for_alert(100)
        ses.pop_alerts()
    assert h.status().num_pieces == atp.ti.num_pieces()


def test_publish_directory(tmp_path, key):
    app = tmp_path / "app"
    write_random(app / "bin" / "till", 2 * MiB, seed=3).chmod(0o755)
    write_random(app / "etc" / "till.conf", 100, seed=4).chmod(0o600)
    (app / "etc" / "empty").write_bytes(b"")
    (app / "share" / "empty-dir").mkdir(parents=True)
    write_random(app / "a.txt", 1000, seed=5)
    m = publish(app, name="till-app", version="7.1.0", private_key=key, out=tmp_path / "rel")
    assert m.kind == "app"
    assert [(f.path, f.mode) for f in m.files] == [
        ("a.txt", 0o644), ("bin/till", 0o755), ("etc/empty", 0o644), ("etc/till.conf", 0o600)
    ]
    whole = b"".join((app / f.path).read_bytes() for f in m.files)
    assert m.payload_blake3 == blake3.blake3(whole).digest() and m.total_size == len(whole)
    verify_release(tmp_path / "rel" / "till-app" / "7.1.0", key.public_key())


def test_refusals(tmp_path, key):
    out = tmp_path / "rel"
    img = write_random(tmp_path / "img", 1000, seed=6)
    publish(img, name="pos-os", version="1", private_key=key, out=out)
    with pytest.raises(PosswarmError, match="already exists"):
        publish(img, name="pos-os", version="1", private_key=key, out=out)
    with pytest.raises(PosswarmError, match="not a safe directory name"):
        publish(img, name="pos-os", version="../2", private_key=key, out=out)
    with pytest.raises(PosswarmError, match="piece size"):
        publish(img, name="pos-os", version="2", private_key=key, out=out, piece_size=100_000)
    with pytest.raises(PosswarmError, match="store"):
        publish(img, name="pos-os", version="2", private_key=key, out=out, targets=Targets(stores=("",)))
    (tmp_path / "empty").mkdir()
    with pytest.raises(PosswarmError, match="empty"):
        publish(tmp_path / "empty", name="app", version="1", private_key=key, out=out)
    (tmp_path / "zero").write_bytes(b"")
    with pytest.raises(PosswarmError, match="empty"):
        publish(tmp_path / "zero", name="app", version="1", private_key=key, out=out)
    with pytest.raises(PosswarmError, match="cannot read"):
        publish(tmp_path / "nope", name="app", version="1", private_key=key, out=out)
    linked = tmp_path / "linked"
    write_random(linked / "real", 100, seed=7)
    (linked / "alias").symlink_to("real")
    with pytest.raises(PosswarmError, match="alias is a symlink"):
        publish(linked, name="app", version="1", private_key=key, out=out)
    assert sorted(p.name for p in out.iterdir()) == [".chunks", "pos-os"]  # failures leave nothing behind
    assert [p.name for p in (out / "pos-os").iterdir()] == ["1"]


def test_second_version_writes_only_changed_chunks(tmp_path, key):
    out = tmp_path / "rel"
    size = 64 * MiB
    img = write_random(tmp_path / "v1.img", size, seed=8)
    r1 = publish_release(img, name="pos-os", version="1", private_key=key, out=out)
    assert r1.chunks_new == len(r1.manifest.unique_chunks()) and r1.bytes_new == size

    # 5 % changed, in three places, as an OS update touching a few files would.
    data = bytearray(img.read_bytes())
    rng = random.Random(9)
    for start in (5 * MiB, 30 * MiB, 50 * MiB):
        data[start : start + 1092 * 1024] = rng.randbytes(1092 * 1024)
    img2 = tmp_path / "v2.img"
    img2.write_bytes(bytes(data))

    store = out / ".chunks"
    store_before = {p: p.stat().st_size for p in store.rglob("*") if p.is_file()}
    r2 = publish_release(img2, name="pos-os", version="2", private_key=key, out=out)
    store_after = {p: p.stat().st_size for p in store.rglob("*") if p.is_file()}
    grown = {p: s for p, s in store_after.items() if p not in store_before}
    assert len(grown) == r2.chunks_new and sum(grown.values()) == r2.bytes_new
    assert r2.bytes_new < 0.2 * size, r2.bytes_new  # ~5 % changed, plus the chunk boundaries around each change

    # Unchanged chunks are the very same inodes as v1's, so no new data was written for them.
    inodes_v1 = {p.stat().st_ino for p in (out / "pos-os" / "1" / "chunks").rglob("*") if p.is_file()}
    inodes_v2 = {p.stat().st_ino for p in (out / "pos-os" / "2" / "chunks").rglob("*") if p.is_file()}
    assert len(inodes_v2 - inodes_v1) == r2.chunks_new
    assert len(inodes_v2 & inodes_v1) == len(r2.manifest.unique_chunks()) - r2.chunks_new > 0
    verify_release(out / "pos-os" / "2", key.public_key())


def test_the_same_payload_under_two_versions_makes_two_torrents(tmp_path):
    from posswarm.keys import generate_keypair, load_private_key
    from seeder.publish import publish

    key = load_private_key(generate_keypair(tmp_path / "k")[0])
    payload = tmp_path / "same.img"
    payload.write_bytes(b"till image " * 100_000)
    one = publish(payload, name="pos-os", version="1.0", private_key=key, out=tmp_path / "r")
    two = publish(payload, name="pos-os", version="1.0.1", private_key=key, out=tmp_path / "r")
    assert one.payload_blake3 == two.payload_blake3
    assert one.info_hash_v1 != two.info_hash_v1 and one.info_hash_v2 != two.info_hash_v2


def text_file(path, size, seed):
    rng = random.Random(seed)
    words = [rng.randbytes(rng.randint(2, 8)).hex().encode() for _ in range(2000)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b" ".join(rng.choices(words, k=size // 6))[:size])
    return path


def test_two_central_stores_publish_the_same_chunks_as_the_same_compressed_files(tmp_path, key):
    img = text_file(tmp_path / "img", 3 * MiB, seed=11)
    one = publish(img, name="pos-os", version="1", private_key=key, out=tmp_path / "a", now=1_800_000_000)
    two = publish(img, name="pos-os", version="1", private_key=key, out=tmp_path / "b", now=1_800_000_000)
    assert one.files == two.files and one.info_hash_v2 == two.info_hash_v2  # same stored bytes, same merkle roots
    assert all(c.compressed for c in one.unique_chunks()[:-1])
    stored = sum(c.size for c in one.unique_chunks())
    assert stored < 0.7 * img.stat().st_size, stored
    for c in one.unique_chunks():
        rel = chunk_relpath(c.digest)
        assert (tmp_path / "a" / "pos-os" / "1" / rel).read_bytes() == (tmp_path / "b" / "pos-os" / "1" / rel).read_bytes()


def test_a_chunk_keeps_the_stored_form_the_central_store_already_has(tmp_path, key):
    from posswarm.chunks import ChunkStore

    img = text_file(tmp_path / "img", 1 * MiB, seed=12)
    first = publish(img, name="pos-os", version="1", private_key=key, out=tmp_path / "rel")
    chunk = first.unique_chunks()[0]
    store = ChunkStore(tmp_path / "rel" / ".chunks")
    content = (tmp_path / "img").read_bytes()[: chunk.length]
    store.path(chunk.digest).unlink()
    (tmp_path / "format-1").write_bytes(content)
    store.adopt(tmp_path / "format-1", chunk.digest)  # as a format-1 publish left it: stored as it is
    second = publish(img, name="pos-os", version="2", private_key=key, out=tmp_path / "rel")
    again = next(c for c in second.unique_chunks() if c.digest == chunk.digest)
    assert (again.size, again.length) == (chunk.length, chunk.length) and not again.compressed
    linked = tmp_path / "rel" / "pos-os" / "2" / chunk_relpath(chunk.digest)
    assert linked.stat().st_ino == store.path(chunk.digest).stat().st_ino
    verify_release(tmp_path / "rel" / "pos-os" / "2", key.public_key())


def test_a_chunk_the_payload_repeats_is_one_file_written_once(tmp_path, key):
    # Zeros cut into maximum-size chunks of the same bytes, many in one batch of the packing threads, and
    # the same random run twice: each repeated chunk is one file, listed at every place it occurs.
    rng = random.Random(13)
    noise = rng.randbytes(1 * MiB)
    img = tmp_path / "img"
    img.write_bytes(noise + bytes(3 * MiB) + noise + bytes(2 * MiB) + b"end")
    r = publish_release(img, name="pos-os", version="1", private_key=key, out=tmp_path / "rel")
    listed = [c.digest for c in r.manifest.files[0].chunks]
    assert len(listed) - len(set(listed)) > 30
    rel = tmp_path / "rel" / "pos-os" / "1"
    files = [p for p in (rel / "chunks").rglob("*") if p.is_file()]
    assert len(files) == len(set(listed)) == r.chunks_new
    content = b"".join(unpack((rel / chunk_relpath(c.digest)).read_bytes(), c.length) for c in r.manifest.files[0].chunks)
    assert content == img.read_bytes()
    verify_release(rel, key.public_key())
