"""`posswarm-seeder enroll-revoke|enroll-revoked` as an operator runs them: the list lives in central's signed targets,
only grows, and survives every later publish, rollout change and key rotation."""

from __future__ import annotations

import datetime

import pytest
from tuf.api.metadata import Metadata, Root

from posswarm.identity import revocations
from tests.seeder.test_cli import assert_one_line_error
from tests.seeder.test_keys_cli import ok, run


@pytest.fixture
def central(tmp_path):
    keys, releases = tmp_path / "keys", tmp_path / "releases"
    ok("keys", "init", "--keys", keys, "--releases", releases)
    return keys, releases


def signed_list(releases) -> tuple[int, tuple]:
    tuf = releases / ".tuf"
    root = Metadata[Root].from_bytes((tuf / "root.json").read_bytes()).signed
    return revocations.verify((tuf / "targets.json").read_bytes(), root, now=datetime.datetime.now(datetime.UTC))


def test_a_revoked_node_stays_in_centrals_signed_targets(central, tmp_path):
    keys, releases = central
    version_before, _ = signed_list(releases)
    out = ok("enroll-revoke", "till-2", "--store", "S042", "--reason", "stolen", "--keys", keys, "--releases", releases)
    assert "revoked node till-2 of store S042" in out
    version, (entry,) = signed_list(releases)
    assert version == version_before + 1 and (entry.store, entry.node_id, entry.reason) == ("S042", "till-2", "stolen")
    again = ok("enroll-revoke", "till-2", "--store", "S042", "--keys", keys, "--releases", releases)
    assert "already revoked" in again

    payload = tmp_path / "image2.bin"
    payload.write_bytes(bytes(range(256)) * 512)
    ok("publish", payload, "--name", "pos-os", "--version", "1.1", "--key", keys / "targets.key", "--out", releases)
    ok("release", "pause", "pos-os", "1.1", "--releases", releases, "--key", keys / "targets.key")
    ok("keys", "rotate", "targets", "--keys", keys, "--releases", releases)
    ok("enroll-revoke", "cache", "--store", "S043", "--keys", keys, "--releases", releases)
    _, entries = signed_list(releases)
    assert [(e.store, e.node_id, e.reason) for e in entries] == [("S042", "till-2", "stolen"), ("S043", "cache", "")]
    listed = ok("enroll-revoked", "--releases", releases).splitlines()
    assert [line.split("\t")[:2] for line in listed] == [["S042", "till-2"], ["S043", "cache"]]


def test_bad_names_and_reasons_are_refused_in_one_line(central):
    keys, releases = central
    assert_one_line_error(run("enroll-revoke", "till:2", "--store", "S042", "--keys", keys, "--releases", releases),
                          1, "node id 'till:2'")
    assert_one_line_error(run("enroll-revoke", "till-2", "--store", "S042", "--reason", "x" * 201, "--keys", keys,
                              "--releases", releases), 1, "--reason")
    assert_one_line_error(run("enroll-revoke", "till-2", "--store", "S042", "--keys", keys / "nope", "--releases",
                              releases), 1, "targets.key")
    assert signed_list(releases)[1] == ()
