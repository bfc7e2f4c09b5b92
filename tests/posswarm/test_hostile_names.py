"""Names and modes a publisher (or a forged manifest) gives cannot brick a till: reserved versions, setuid files."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from posswarm import install
from posswarm.errors import PosswarmError
from posswarm.keys import generate_keypair, load_private_key
from posswarm.manifest import check_component, safe_mode
from seeder.publish import publish

SEEDER = str(Path(sys.executable).with_name("posswarm-seeder"))


@pytest.mark.parametrize("version", ["current", "previous", "held", "Current", "activate"])
def test_reserved_versions_are_refused_by_the_manifest_rule(version):
    with pytest.raises(PosswarmError, match="reserved for the node's own bookkeeping"):
        check_component(version, "release version")


@pytest.mark.parametrize("version", ["current", "held", ".hidden", "../up"])
def test_publish_refuses_a_reserved_or_dot_version_in_one_line(tmp_path, version):
    private, _ = generate_keypair(tmp_path / "keys")
    payload = tmp_path / "app"
    payload.mkdir()
    (payload / "run.sh").write_text("#!/bin/sh\n")
    done = subprocess.run([SEEDER, "publish", str(payload), "--name", "till-app", "--version", version,
                           "--key", str(private), "--out", str(tmp_path / "releases")], capture_output=True, text=True)
    assert done.returncode != 0
    assert "release version" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "releases" / "till-app").exists()


@pytest.mark.parametrize(("mode", "safe"), [(0o4755, 0o755), (0o2775, 0o755), (0o777, 0o755), (0o1666, 0o644),
                                            (0o600, 0o600), (0o700, 0o700), (0o666, 0o644)])
def test_modes_are_masked_to_0755(mode, safe):
    assert safe_mode(mode) == safe


def test_a_setuid_world_writable_payload_file_installs_as_0755(tmp_path):
    private, _ = generate_keypair(tmp_path / "keys")
    payload = tmp_path / "app"
    payload.mkdir()
    tool = payload / "tool"
    tool.write_bytes(b"#!/bin/sh\necho hi\n")
    os.chmod(tool, 0o4777)
    (payload / "notes").write_text("plain\n")
    os.chmod(payload / "notes", 0o666)
    manifest = publish(payload, name="till-app", version="1.0", private_key=load_private_key(private),
                       out=tmp_path / "releases")
    assert {f.path: f.mode for f in manifest.files} == {"tool": 0o755, "notes": 0o644}
    root = tmp_path / "installed" / "till-app"
    path = install.assemble(manifest, tmp_path / "releases" / "till-app" / "1.0", root)
    assert stat.S_IMODE((path / "tool").stat().st_mode) == 0o755
    assert stat.S_IMODE((path / "notes").stat().st_mode) == 0o644
