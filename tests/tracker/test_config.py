"""Tracker config: TOML keys, defaults, overrides and the errors a person reads."""

import pytest

from posswarm.errors import PosswarmError
from tracker import config


def test_defaults_and_toml_with_overrides(tmp_path):
    assert config.TrackerConfig().effective_peer_ttl == 90
    assert config.TrackerConfig(interval=5).effective_min_interval == 5
    path = tmp_path / "tracker.toml"
    path.write_text('listen = "[::1]:0"\ninterval = 60\npolicy = "completeness"\ncross_store = true\n'
                    'udp = "127.0.0.1:0"\ncatalog = "http://seeder:8000/catalog"\n'
                    '[passkeys]\nstore-17 = "k17"\nstore-42 = "k42"\n')
    c = config.load(path, interval=None, policy="store-first")
    assert (c.host, c.port, c.interval, c.policy, c.cross_store) == ("::1", 0, 60, "store-first", True)
    assert (c.open, c.udp_address, c.passkeys, c.peer_store) == (
        False, ("127.0.0.1", 0), {"store-17": "k17", "store-42": "k42"}, "memory")
    assert config.load(path, open=True).open is True


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('intervl = 3', "unknown key 'intervl'"),
        ('open = true\npolicy = "nearest"', "'nearest' does not exist"),
        ('open = true\ninterval = 0', "interval = 0: must be a whole number"),
        ('open = true\ninterval = 5\nmin_interval = 10', "min_interval = 10 is above interval = 5"),
        ('listen = "localhost"', "expected HOST:PORT"),
        ('listen = [', "not valid TOML"),
        ('open = false', "private mode needs catalog"),
        ('catalog = 5', "catalog = 5: must be a URL"),
        ('open = true\nudp = "nowhere"', "expected HOST:PORT"),
        ('open = true\npeer_store = "etcd"', "choose memory or redis"),
        ('open = true\n[passkeys]\na = "k"\nb = "k"', "two stores share a passkey"),
        ('open = true\n[passkeys]\na = "no spaces"', "each entry must be store"),
    ],
)
def test_bad_config_names_the_key(tmp_path, text, reason):
    path = tmp_path / "tracker.toml"
    path.write_text(text)
    with pytest.raises(PosswarmError, match=reason):
        config.load(path)


def test_missing_file_is_a_one_line_error(tmp_path):
    with pytest.raises(PosswarmError, match="cannot read it"):
        config.load(tmp_path / "absent.toml")
