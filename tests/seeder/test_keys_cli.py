"""`posswarm-seeder keys init|rotate|revoke` as an operator runs them: roles, rotation chains, revocation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from tuf.api.metadata import Metadata, Root, Targets

from posswarm.keys import key_id, load_private_key
from posswarm.manifest import Manifest, verify_manifest
from posswarm.rollout import Rollout
from posswarm.trust.roles import ENROLMENT_FIELD, RETIRED_FIELD, public_pem, release_keys, role_public_keys
from tests.seeder.test_cli import assert_one_line_error

SEEDER = str(Path(sys.executable).parent / "posswarm-seeder")


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([SEEDER, *map(str, args)], capture_output=True, text=True, timeout=60)


def ok(*args) -> str:
    proc = run(*args)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def root(releases: Path, version: int) -> Metadata[Root]:
    return Metadata[Root].from_bytes((releases / ".tuf" / f"{version}.root.json").read_bytes())


@pytest.fixture
def central(tmp_path):
    keys, releases = tmp_path / "keys", tmp_path / "releases"
    ok("keys", "init", "--keys", keys, "--releases", releases)
    payload = tmp_path / "image.bin"
    payload.write_bytes(bytes(range(256)) * 1024)
    ok("publish", payload, "--name", "pos-os", "--version", "1.0", "--key", keys / "targets.key", "--out", releases)
    return keys, releases


def test_init_writes_one_key_per_role_and_a_self_signed_root(central):
    keys, releases = central
    for role in ("root", "targets", "snapshot", "timestamp", "enrolment", "sku"):
        assert (keys / f"{role}.key").stat().st_mode & 0o077 == 0
    first = root(releases, 1)
    first.verify_delegate("root", first)
    assert (keys / "root.json").read_bytes() == (releases / ".tuf" / "root.json").read_bytes()
    enrolment = first.signed.unrecognized_fields[ENROLMENT_FIELD]
    assert enrolment["threshold"] == 1 and len(enrolment["keyids"]) == 1
    assert [public_pem(k) for k in role_public_keys(first.signed, "enrolment")] == [
        public_pem(load_private_key(keys / "enrolment.key").public_key())]
    authority = x509.load_pem_x509_certificate((keys / "enrolment-ca.crt").read_bytes())
    assert public_pem(authority.public_key()) == public_pem(load_private_key(keys / "enrolment.key").public_key())
    targets = Metadata[Targets].from_bytes((releases / ".tuf" / "targets.json").read_bytes())
    first.verify_delegate("targets", targets)
    listed = targets.signed.targets["pos-os/1.0/manifest.msgpack"]
    assert listed.length == (releases / "pos-os" / "1.0" / "manifest.msgpack").stat().st_size
    assert listed.custom["targets"]["ring"] == "all"
    assert_one_line_error(run("keys", "init", "--keys", keys / "again", "--releases", releases), 1, "already initialised")


def test_rotating_root_is_signed_by_the_old_root_and_the_new_key(central):
    keys, releases = central
    ok("keys", "rotate", "root", "--keys", keys, "--releases", releases)
    old, new = root(releases, 1), root(releases, 2)
    old.verify_delegate("root", new)  # the chain a node walks: the old root's threshold ...
    new.verify_delegate("root", new)  # ... and the new root's own
    assert new.signed.roles["root"].keyids != old.signed.roles["root"].keyids


def test_rotating_the_release_key_keeps_old_releases_and_revoking_it_re_signs_them(central):
    keys, releases = central
    old_key = load_private_key(keys / "targets.key")
    ok("release", "pause", "pos-os", "1.0", "--releases", releases, "--key", keys / "targets.key")  # rollout 1
    ok("keys", "rotate", "targets", "--keys", keys, "--releases", releases)
    new = root(releases, 2)
    root(releases, 1).verify_delegate("root", new)
    targets = Metadata[Targets].from_bytes((releases / ".tuf" / "targets.json").read_bytes())
    new.verify_delegate("targets", targets)  # re-signed by the new key
    ring = release_keys(new.signed)
    assert key_id(old_key.public_key()) in ring.ids()  # retired: what it signed before still verifies
    manifest = releases / "pos-os" / "1.0" / "manifest.msgpack"
    verify_manifest(manifest.read_bytes(), ring)

    out = ok("keys", "revoke", key_id(old_key.public_key()), "--keys", keys, "--releases", releases)
    assert "re-signed 2 " in out  # the manifest, and the rollout one sequence higher
    rollout = Rollout.from_bytes((releases / "pos-os" / "1.0" / "rollout.msgpack").read_bytes())
    assert (rollout.sequence, rollout.state) == (2, "paused")
    revoked = root(releases, 3)
    assert key_id(old_key.public_key()) not in release_keys(revoked.signed).ids()
    assert not revoked.signed.unrecognized_fields[RETIRED_FIELD]
    m = verify_manifest(manifest.read_bytes(), release_keys(revoked.signed))
    assert m.key_id == key_id(load_private_key(keys / "targets.key").public_key())
    listed = json.loads((releases / ".tuf" / "targets.json").read_text())["signed"]["targets"]
    assert listed["pos-os/1.0/manifest.msgpack"]["length"] == len(Manifest.from_bytes(manifest.read_bytes()).to_bytes())


def test_a_role_s_last_key_cannot_be_revoked_and_unknown_keys_are_named(central):
    keys, releases = central
    current = key_id(load_private_key(keys / "targets.key").public_key())
    assert_one_line_error(run("keys", "revoke", current, "--keys", keys, "--releases", releases), 1,
                          "last 1 key(s)", "keys rotate targets")
    assert_one_line_error(run("keys", "revoke", "0123456789abcdef", "--keys", keys, "--releases", releases), 1,
                          "not in the root of trust")


def test_a_root_of_three_officers_needs_two_to_sign_a_new_root(tmp_path):
    keys, releases = tmp_path / "keys", tmp_path / "releases"
    ok("keys", "init", "--keys", keys, "--releases", releases, "--root-keys", "3", "--root-threshold", "2")
    first = root(releases, 1)
    assert len(first.signed.roles["root"].keyids) == 3 and first.signed.roles["root"].threshold == 2
    (keys / "root.3.key").unlink()  # one officer is away: two of three still sign
    ok("keys", "rotate", "snapshot", "--keys", keys, "--releases", releases)
    first.verify_delegate("root", root(releases, 2))
    (keys / "root.2.key").unlink()  # one key left: below the threshold, nothing is written or moved
    before = sorted(p.name for p in keys.iterdir())
    assert_one_line_error(run("keys", "rotate", "targets", "--keys", keys, "--releases", releases), 1,
                          "1 of the 2 the root threshold needs")
    assert sorted(p.name for p in keys.iterdir()) == before
    assert not (releases / ".tuf" / "3.root.json").exists()
    assert_one_line_error(run("keys", "init", "--keys", tmp_path / "k2", "--releases", tmp_path / "r2",
                              "--root-keys", "2", "--root-threshold", "3"), 1, "--root-threshold 3")


def test_rotating_the_enrolment_key_renames_the_authority(central):
    keys, releases = central
    before = (keys / "enrolment-ca.crt").read_bytes()
    ok("keys", "rotate", "enrolment", "--keys", keys, "--releases", releases)
    second = root(releases, 2)
    root(releases, 1).verify_delegate("root", second)
    new_key = load_private_key(keys / "enrolment.key").public_key()
    assert [public_pem(k) for k in role_public_keys(second.signed, "enrolment")] == [public_pem(new_key)]
    after = x509.load_pem_x509_certificate((keys / "enrolment-ca.crt").read_bytes())
    assert (keys / "enrolment-ca.crt").read_bytes() != before and public_pem(after.public_key()) == public_pem(new_key)
    assert_one_line_error(run("keys", "revoke", key_id(new_key), "--keys", keys, "--releases", releases), 1,
                          "rotate it instead")
