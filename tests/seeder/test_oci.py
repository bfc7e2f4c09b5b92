"""OCI image layouts publish as releases of kind oci; a layer shared by two app versions is stored once."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from posswarm.errors import PosswarmError
from posswarm.keys import generate_keypair, load_private_key
from seeder.publish import publish_release


def _blob(layout: Path, data: bytes) -> dict:
    digest = hashlib.sha256(data).hexdigest()
    path = layout / "blobs" / "sha256" / digest
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def make_layout(path: Path, layers: list[bytes]) -> Path:
    """A minimal but valid OCI image layout: index -> manifest -> config + layers."""
    path.mkdir(parents=True)
    (path / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    config = _blob(path, json.dumps({"architecture": "amd64", "os": "linux"}).encode())
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **_blob(path, layer)}
                           for layer in layers]}
    desc = _blob(path, json.dumps(manifest).encode())
    (path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", **desc}]}))
    return path


@pytest.fixture
def key(tmp_path):
    return load_private_key(generate_keypair(tmp_path / "keys")[0])


def test_a_shared_layer_is_stored_once_across_app_versions(tmp_path, key):
    base, app1, app2 = os.urandom(6 << 20), os.urandom(1 << 20), os.urandom(1 << 20)
    out = tmp_path / "releases"
    first = publish_release(make_layout(tmp_path / "v1", [base, app1]), name="till-app", version="1.0",
                            private_key=key, out=out)
    second = publish_release(make_layout(tmp_path / "v2", [base, app2]), name="till-app", version="1.1",
                             private_key=key, out=out)
    assert first.manifest.kind == second.manifest.kind == "oci"
    assert second.bytes_new < (2 << 20) + 64 * 1024  # the new layer, config and manifest JSON; not the 6 MiB base


@pytest.mark.parametrize("damage", ["missing", "changed"])
def test_a_broken_layout_is_refused_naming_the_blob(tmp_path, key, damage):
    layout = make_layout(tmp_path / "v1", [os.urandom(300_000)])
    layer = max((layout / "blobs" / "sha256").iterdir(), key=lambda p: p.stat().st_size)
    if damage == "missing":
        layer.unlink()
    else:
        layer.write_bytes(b"x" + layer.read_bytes()[1:])
    with pytest.raises(PosswarmError, match=f"OCI layout .*blob sha256:{layer.name}"):
        publish_release(layout, name="till-app", version="1.0", private_key=key, out=tmp_path / "releases")
    assert not (tmp_path / "releases" / "till-app" / "1.0").exists()
