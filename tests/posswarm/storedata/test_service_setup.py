"""Store-data settings: seeds and the test-only fault string fail with one clear line; store data needs a credential."""

from __future__ import annotations

import pytest

from posswarm.config import from_dict
from posswarm.errors import PosswarmError
from posswarm.gossip.faults import Faults, parse
from posswarm.storedata.service import parse_seeds


def test_every_node_needs_a_credential_and_a_device_reads_its_cache_over_https(tmp_path):
    root = tmp_path / "root.json"
    root.write_text("{}")
    node = {"role": "device", "store": "S042", "address": "10.0.0.5", "lan_network": "10.0.0.0/24"}
    base = {"node": {**node, "identity_dir": str(tmp_path)}, "central": {"root": str(root)}}
    with pytest.raises(PosswarmError, match="'node.identity_dir' is missing"):
        from_dict({"node": node, "central": base["central"], "store": {"data": True}})
    legacy = from_dict({**base, "store": {"gossip_key_file": str(tmp_path / "no-longer-read")}})
    assert legacy.store_data and not from_dict(base).store_data
    with pytest.raises(PosswarmError, match="'store.data' must be a bool"):
        from_dict({**base, "store": {"data": "yes"}})
    # A device reads its cache only over TLS, checked against the cache's certificate.
    with pytest.raises(PosswarmError, match="'store.cache_url' http://10.0.0.1:8080 is plain HTTP"):
        from_dict({**base, "store": {"cache_url": "http://10.0.0.1:8080"}})
    assert from_dict({**base, "store": {"cache_url": "https://10.0.0.1:8080"}}).cache_url == "https://10.0.0.1:8080"


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
