"""The delta benchmark's parts on a small real ext4 image pair: deterministic images, wire bytes that
libtorrent really moves, casync as the reference, and the tables it writes."""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil

import pytest

from posswarm.chunks import ChunkStore, chunk_relpath
from posswarm.keys import generate_keypair, load_private_key
from posswarm.release import TORRENT_NAME, verify_release
from seeder.publish import publish_release
from tools import bench_delta, delta_measures, images

MiB = 1 << 20
needs_tools = pytest.mark.skipif(any(shutil.which(t) is None for t in bench_delta.TOOLS),
                                 reason="needs e2fsprogs, casync and zstd (apt-get install e2fsprogs casync zstd)")


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    if shutil.which("mkfs.ext4") is None:
        pytest.skip("needs e2fsprogs (apt-get install e2fsprogs)")
    work = tmp_path_factory.mktemp("images")
    v1, v2, change = images.build_pair(work, 24 * MiB, "upgrade")
    return work, v1, v2, change


def test_the_image_is_a_real_ext4_filesystem_and_the_same_tree_gives_the_same_bytes(pair, tmp_path):
    work, v1, v2, change = pair
    assert v1.stat().st_size == v2.stat().st_size == 24 * MiB
    with open(v1, "rb") as f:
        f.seek(1024 + 0x38)
        assert f.read(2) == b"\x53\xef"  # the ext2/3/4 superblock magic
    again = tmp_path / "again.img"
    images.build_image(work / "tree-v1", again, 24 * MiB)
    assert _sha(again) == _sha(v1)
    assert _sha(v1) != _sha(v2)
    assert change.files_changed > 10 and change.files_removed > 0 and change.files_added > 0
    assert 0 < change.bytes_changed < 24 * MiB


def test_each_kind_of_change_touches_what_it_says(pair, tmp_path):
    work, *_ = pair
    files = images.files_of(work / "tree-v1")
    for kind in images.CHANGES:
        new = tmp_path / kind
        change = images.next_tree(work / "tree-v1", new, kind)
        after = images.files_of(new)
        edited = [f for f in after if f in files and (new / f).stat().st_ino != (work / "tree-v1" / f).stat().st_ino]
        assert len(edited) == change.files_changed > 0
        assert all((new / f).read_bytes() != (work / "tree-v1" / f).read_bytes() for f in edited)
        assert len(after) == len(files) - change.files_removed + change.files_added
    with pytest.raises(images.PosswarmError, match="not one of upgrade, package, scattered"):
        images.next_tree(work / "tree-v1", tmp_path / "x", "rewrite")


def test_the_update_bytes_computed_from_the_releases_are_what_libtorrent_moves(pair, tmp_path):
    work, v1, v2, _ = pair
    key = load_private_key(generate_keypair(tmp_path / "keys")[0])
    out = tmp_path / "releases"
    one = publish_release(v1, name="pos-os", version="1", private_key=key, out=out)
    two = publish_release(v2, name="pos-os", version="2", private_key=key, out=out)
    verify_release(two.path, key.public_key())
    wire = delta_measures.wire_of_release(two.path, one.path)
    assert 0 < wire["stored"] < wire["content"]  # compressed on the wire
    assert wire["stored"] < sum(c.size for c in two.manifest.unique_chunks()) / 2  # most of v2 is v1's

    # A node holding version 1: its chunk store has v1's files, linked into version 2 before the swarm.
    node = tmp_path / "node"
    store = ChunkStore(node / "store")
    for c in one.manifest.unique_chunks():
        store.adopt(one.path / chunk_relpath(c.digest), c.digest)
    for c in two.manifest.unique_chunks():
        store.link_into(c.digest, node / "2", size=c.size)

    moved = delta_measures.transfer((two.path / TORRENT_NAME).read_bytes(), two.path, node / "2", timeout_s=60)
    assert moved["payload_download"] == wire["stored"] and moved["failed"] == 0
    verify_release(two.path, key.public_key())
    shutil.copy(two.path / "manifest.msgpack", node / "2")
    shutil.copy(two.path / TORRENT_NAME, node / "2")
    verify_release(node / "2", key.public_key())  # every chunk the node holds decodes to its BLAKE3


@needs_tools
def test_the_benchmark_runs_casync_beside_posswarm_and_writes_its_table(tmp_path):
    args = argparse.Namespace(image_mb=24, changes="upgrade,scattered", sweep=True, no_random=True,
                              workdir=tmp_path, write_docs=False, json=False)
    result = bench_delta.bench(args, tmp_path)
    full, upgrade, scattered = result["rows"]
    assert full["what"] == "full image" and upgrade["what"] == "update: upgrade"
    for row in result["rows"]:
        assert row["posswarm"] > 0 and row["casync"] > 0 and row["ratio"] == round(row["posswarm"] / row["casync"], 3)
    assert full["posswarm"] < full["content"] / 2 and full["casync"] < full["content"] / 2
    assert result["zstd_image"] < full["content"] / 2 and result["decode_mbs"] > 0
    # casync's index gives the content of its chunks: the whole image once (less its repeats), an update's a part
    assert full["casync_content"] <= full["content"] and full["posswarm_content"] <= full["content"]
    assert 0 < upgrade["casync_content"] < full["casync_content"] and upgrade["posswarm_content"] > upgrade["posswarm"]
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nbefore\n")
    bench_delta.write_docs(bench_delta.table(result), doc)
    bench_delta.write_docs(bench_delta.table(result), doc)  # a rerun replaces its block
    text = doc.read_text()
    assert text.count(bench_delta.BEGIN) == 1 and f"Commit `{result['commit']}`" in text and "before" in text
    assert "| update: scattered |" in text and "| packed into 1 MiB files |" in text
    assert "Content in the chunks sent, posswarm / casync: full image" in text
    assert len(result["sweep"]) == len(delta_measures.SWEEP_SIZES) + len(delta_measures.SWEEP_LEVELS) - 1
    chunk_files, packed = result["torrent_cost"]
    assert chunk_files["bytes"] == packed["bytes"] == full["posswarm"] and chunk_files["files"] > packed["files"]
    assert os.listdir(tmp_path)  # the caller's workdir is left for the caller
