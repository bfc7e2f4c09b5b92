"""`posswarm-seeder enroll` and `enroll-token` as an operator runs them: a credential a node starts with,
and one-time tokens only central can issue and a node can use once."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from tuf.api.metadata import Metadata, Root

from posswarm.identity.credential import check_matches, load_credential
from posswarm.trust.roles import role_public_keys
from tests.seeder.test_cli import assert_one_line_error
from tests.seeder.test_keys_cli import ok, run


def enrolment_keys(keys: Path):
    return tuple(role_public_keys(Metadata[Root].from_bytes((keys / "root.json").read_bytes()).signed, "enrolment"))


@pytest.fixture
def keys(tmp_path):
    ok("keys", "init", "--keys", tmp_path / "keys", "--releases", tmp_path / "releases")
    return tmp_path / "keys"


def test_enroll_writes_a_credential_the_node_accepts(keys, tmp_path):
    out = ok("enroll", "till-07", "--store", "S042", "--role", "device", "--class", "pos", "--keys", keys,
             "--out", tmp_path / "till-07")
    assert out.count("\n") == 1 and "enrolled device till-07 of store S042" in out
    assert (tmp_path / "till-07" / "node.key").stat().st_mode & 0o077 == 0
    credential = load_credential(tmp_path / "till-07", enrolment_keys(keys), now=datetime.datetime.now(datetime.UTC))
    check_matches(credential.identity, node_id="till-07", store="S042", role="device")
    assert credential.identity.device_class == "pos"


def test_enroll_refuses_bad_names_and_missing_keys_with_one_line(keys, tmp_path):
    proc = run("enroll", "till:07", "--store", "S042", "--role", "device", "--class", "pos", "--keys", keys,
               "--out", tmp_path / "x")
    assert_one_line_error(proc, 1, "node id 'till:07'")
    proc = run("enroll", "till-07", "--store", "S042", "--role", "device", "--class", "pos", "--keys",
               tmp_path / "nowhere", "--out", tmp_path / "x")
    assert_one_line_error(proc, 1, "enrolment")
    assert not (tmp_path / "x").exists()
