"""Install: staging, BLAKE3 of the whole payload, atomic current/previous switch."""

from __future__ import annotations

import pytest

from posswarm import install
from posswarm.errors import PosswarmError
from posswarm.keys import generate_keypair, load_private_key
from seeder.publish import publish


@pytest.fixture
def published(tmp_path):
    private, _ = generate_keypair(tmp_path / "keys")
    key = load_private_key(private)
    payload = tmp_path / "app"
    (payload / "bin").mkdir(parents=True)
    (payload / "bin" / "till").write_bytes(b"#!/bin/sh\necho till\n")
    (payload / "bin" / "till").chmod(0o755)
    (payload / "data.bin").write_bytes(bytes(range(256)) * 9000)

    def make(version: str):
        return publish(payload, name="till-app", version=version, private_key=key, out=tmp_path / "releases")

    return make, tmp_path


def test_assemble_then_activate_keeps_previous(published):
    make, tmp = published
    root = tmp / "installed" / "till-app"
    for version in ("1.0", "1.1", "1.2"):
        manifest = make(version)
        built = install.assemble(manifest, tmp / "releases" / "till-app" / version, root)
        assert (built / "bin" / "till").read_bytes() == b"#!/bin/sh\necho till\n"
        assert (built / "bin" / "till").stat().st_mode & 0o777 == 0o755
        install.activate(root, version)
    assert install.current_version(root) == "1.2"
    assert install.previous_version(root) == "1.1"
    assert sorted(p.name for p in root.iterdir() if not p.is_symlink()) == ["1.1", "1.2"]


def test_a_corrupt_chunk_never_becomes_current(published):
    make, tmp = published
    manifest = make("2.0")
    release_dir = tmp / "releases" / "till-app" / "2.0"
    chunk = next((release_dir / "chunks").rglob("*/*"))
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.unlink()  # it is a hard link into the central store: replace, do not edit in place
    chunk.write_bytes(bytes(data))
    root = tmp / "installed" / "till-app"
    with pytest.raises(PosswarmError, match="BLAKE3 does not match"):
        install.assemble(manifest, release_dir, root)
    assert not root.joinpath("2.0").exists()
    assert not [p for p in root.iterdir() if p.name.startswith(".staging")]
    assert install.current_version(root) is None


def test_a_chunk_that_decodes_to_more_than_its_manifest_says_is_refused_before_decoding(published):
    from posswarm.chunks import pack

    make, tmp = published
    manifest = make("3.0")
    release_dir = tmp / "releases" / "till-app" / "3.0"
    victim = next(c for f in manifest.files for c in f.chunks if c.compressed)
    path = release_dir / "chunks" / victim.hex[:2] / victim.hex
    bomb = pack(b"\0" * (64 * 1024 * 1024))[: victim.size].ljust(victim.size, b"\0")  # same size, 64 MiB inside
    path.unlink()
    path.write_bytes(bomb)
    root = tmp / "installed" / "till-app"
    with pytest.raises(PosswarmError, match=f"chunk {victim.hex[:16]} is a zstd frame of 67108864 bytes"):
        install.assemble(manifest, release_dir, root)
    assert not root.joinpath("3.0").exists() and install.current_version(root) is None
