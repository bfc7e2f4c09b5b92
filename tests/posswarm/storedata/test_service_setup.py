"""Store-data settings: the gossip secret file, seeds and the test-only fault string fail with one clear line."""

from __future__ import annotations

import pytest

from posswarm.errors import PosswarmError
from posswarm.gossip.faults import Faults, parse
from posswarm.storedata.service import parse_seeds, read_secret


def test_secret_file_is_read_and_checked(tmp_path):
    (tmp_path / "k").write_text("  0123456789abcdef0123  \n")
    assert read_secret(tmp_path / "k") == b"0123456789abcdef0123"
    (tmp_path / "short").write_text("tiny")
    with pytest.raises(PosswarmError, match="4 bytes, need at least 16"):
        read_secret(tmp_path / "short")
    with pytest.raises(PosswarmError, match="cannot read it"):
        read_secret(tmp_path / "missing")


def test_seeds_and_faults_parse():
    assert parse_seeds("10.0.0.1:7946, 10.0.0.2:17946") == [("10.0.0.1", 7946), ("10.0.0.2", 17946)]
    assert parse_seeds("") == []
    with pytest.raises(PosswarmError, match="not HOST:PORT"):
        parse_seeds("10.0.0.1")
    assert parse("drop=0.3,dup=0.1") == Faults(drop=0.3, dup=0.1)
    assert not parse("").active
    for bad in ("drop=2", "loss=0.1", "drop"):
        with pytest.raises(PosswarmError, match="gossip faults"):
            parse(bad)
