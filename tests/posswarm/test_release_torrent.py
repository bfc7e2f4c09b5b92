"""The release torrent written from hashes made while chunks are written is libtorrent's own, byte for byte."""

from __future__ import annotations

import random
from pathlib import Path

import libtorrent as lt
import pytest

from posswarm.release_torrent import file_tree, torrent

# Around every boundary that changes the tree's shape: one block, a piece, a power of two of blocks.
SIZES = (1, 100, 16383, 16384, 16385, 50_000, 65_536, 131_072, 131_073, 200_000, 262_144, 262_145, 600_000)


def _chunks(root: Path) -> dict[str, bytes]:
    rng = random.Random(7)
    files = {}
    for i, size in enumerate(SIZES):
        rel = f"{i % 3:02x}/{i:064x}"
        data = rng.randbytes(size)
        (root / "chunks" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "chunks" / rel).write_bytes(data)
        files[rel] = data
    return files


@pytest.mark.parametrize("piece_size", [16 * 1024, 64 * 1024, 256 * 1024])
def test_the_same_bytes_as_libtorrent_for_the_same_files(tmp_path, piece_size):
    files = _chunks(tmp_path)
    ct = lt.create_torrent(lt.list_files(str(tmp_path / "chunks")), piece_size, flags=lt.create_torrent.v2_only)
    ct.set_priv(True)
    ct.set_creator("posswarm")
    ct.set_creation_date(1_800_000_000)
    lt.set_piece_hashes(ct, str(tmp_path))
    expected = ct.generate()
    expected[b"info"][b"posswarm release"] = b"pos-os 2026.12"
    ours = torrent({rel: file_tree(data, piece_size) for rel, data in files.items()}, name="chunks",
                   piece_size=piece_size, created=1_800_000_000, creator="posswarm", private=True,
                   extra_info={b"posswarm release": b"pos-os 2026.12"})
    assert ours == lt.bencode(expected)
    if piece_size < max(SIZES):
        assert b"piece layers" in expected  # the multi-piece files' layers are covered, not only roots


def test_libtorrent_checks_the_files_against_it(tmp_path):
    files = _chunks(tmp_path)
    data = torrent({rel: file_tree(d, 16 * 1024) for rel, d in files.items()}, name="chunks", piece_size=16 * 1024,
                   created=0, creator="posswarm", private=True, extra_info={})
    atp = lt.load_torrent_buffer(data)
    atp.save_path = str(tmp_path)
    ses = lt.session({"listen_interfaces": "127.0.0.1:0", "enable_dht": False, "enable_lsd": False,
                      "enable_upnp": False, "enable_natpmp": False})
    handle = ses.add_torrent(atp)
    handle.force_recheck()
    for _ in range(200):
        status = handle.status()
        if status.state == lt.torrent_status.seeding:
            break
        ses.wait_for_alert(50)
        ses.pop_alerts()
    assert handle.status().state == lt.torrent_status.seeding  # every piece of every file passed


def test_an_empty_file_has_no_place_in_the_tree():
    assert torrent({"00/e": file_tree(b"", 16384)}, name="chunks", piece_size=16384, created=0, creator="x",
                   private=False, extra_info={}).count(b"pieces root") == 0
