"""Tracker config: TOML keys, defaults, overrides and the errors a person reads."""

import pytest

from posswarm.errors import PosswarmError
from tracker import config

LONG = "Qx7-" + "a1B2c3D4e5F6g7H8i9J0"  # 24 characters of a 66-letter alphabet: above 128 bits


def test_defaults_and_toml_with_overrides(tmp_path):
    assert config.TrackerConfig().effective_peer_ttl == 90
    assert config.TrackerConfig(interval=5).effective_min_interval == 5
    path = tmp_path / "tracker.toml"
    path.write_text('listen = "[::1]:0"\ninterval = 60\npolicy = "completeness"\ncross_store = true\n'
                    'udp = "127.0.0.1:0"\ncatalog = "http://seeder:8000/catalog"\ncentral_passkeys = ["central-Q1w2E3r4T5y6U7i8"]\n'
                    '[passkeys]\nstore-17 = "k17-a1B2c3D4e5F6g7H8i9J0"\nstore-42 = "k42-Z9y8X7w6V5u4T3s2R1q0"\n')
    c = config.load(path, interval=None, policy="store-first")
    assert (c.host, c.port, c.interval, c.policy, c.cross_store) == ("::1", 0, 60, "store-first", True)
    assert (c.open, c.udp_address, c.passkeys, c.peer_store) == (
        False, ("127.0.0.1", 0), {"store-17": "k17-a1B2c3D4e5F6g7H8i9J0", "store-42": "k42-Z9y8X7w6V5u4T3s2R1q0"}, "memory")
    assert c.central_passkeys == ["central-Q1w2E3r4T5y6U7i8"] and c.trusted_proxies == ["127.0.0.0/8", "::1/128"]
    assert config.load(path, open=True).open is True


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('intervl = 3', "unknown key 'intervl'"),
        ('open = true\npolicy = "nearest"', "'nearest' does not exist"),
        ('open = true\ninterval = 0', "interval = 0: must be a whole number"),
        ('open = true\ninterval = 5\nmin_interval = 10', "min_interval = 10 is above interval = 5"),
        ('listen = "localhost"', "is not HOST:PORT: no port"),
        ('listen = [', "not valid TOML"),
        ('open = false', "private mode needs catalog"),
        ('catalog = 5', "catalog = 5: must be a URL"),
        ('open = true\nudp = "nowhere"', "is not HOST:PORT: no port"),
        ('open = true\npeer_store = "etcd"', "choose memory or redis"),
        ('open = true\ntls_cert = "/nonexistent/tls.crt"', "tls_cert = '/nonexistent/tls.crt': no such file"),
        ('open = true\nplain_http = "yes"', "plain_http = 'yes': must be true or false"),
        ('open = true\n[passkeys]\na = "%s"\nb = "%s"' % (LONG, LONG), "two entries share a passkey"),
        ('open = true\ncentral_passkeys = ["%s"]\n[passkeys]\na = "%s"' % (LONG, LONG), "two entries share a passkey"),
        # 128 bits at least, judged by the alphabet the passkey is drawn from; one line naming the entry and the fix.
        ('open = true\n[passkeys]\nstore-9 = "k"', r"\[passkeys\] store-9: passkey holds 6 bits, at least 128 .*token_urlsafe"),
        ('open = true\n[passkeys]\nstore-9 = "%s"' % ("ab12" * 7), "holds 112 bits"),  # 28 hex digits
        ('open = true\ncentral_passkeys = ["short"]', r"central_passkeys\[0\]: passkey holds"),
        ('open = true\n[passkeys]\ncentral = "%s"' % LONG, "move that passkey to central_passkeys"),
        ('open = true\ntrusted_proxies = ["10.0.0.300/32"]', "trusted_proxies: '10.0.0.300/32' is not a CIDR"),
        ('open = true\nmax_peer_ttl = 10', "max_peer_ttl = 10 is below peer_ttl = 90"),
        ('open = true\nmax_records_per_store = 0', "max_records_per_store = 0: must be a whole number"),
        ('open = true\n[passkeys]\na = "no spaces"', "each entry must be store"),
    ],
)
def test_bad_config_names_the_key(tmp_path, text, reason):
    path = tmp_path / "tracker.toml"
    path.write_text(text)
    with pytest.raises(PosswarmError, match=reason):
        config.load(path)


def test_tls_keys_go_together(tmp_path):
    for name in ("tls.crt", "tls.key", "ca.crt"):
        (tmp_path / name).write_text("x")
    crt, key, ca = (str(tmp_path / n) for n in ("tls.crt", "tls.key", "ca.crt"))
    with pytest.raises(PosswarmError, match="tls_cert and tls_key go together"):
        config.from_mapping({"open": True, "tls_cert": crt})
    with pytest.raises(PosswarmError, match="node_ca: node certificates are read in the TLS handshake"):
        config.from_mapping({"open": True, "node_ca": ca})
    with pytest.raises(PosswarmError, match="plain_http and tls_cert/tls_key contradict"):
        config.from_mapping({"open": True, "tls_cert": crt, "tls_key": key, "plain_http": True})
    c = config.from_mapping({"open": True, "tls_cert": crt, "tls_key": key, "node_ca": ca})
    assert config.require_tls_choice(c) is c
    with pytest.raises(PosswarmError, match="announces are served over HTTPS"):
        config.require_tls_choice(config.from_mapping({"open": True}))
    assert config.require_tls_choice(config.from_mapping({"open": True, "plain_http": True})).plain_http


def test_the_root_of_trust_needs_node_certificates_and_central_s_catalog(tmp_path):
    for name in ("tls.crt", "tls.key", "ca.crt", "root.json"):
        (tmp_path / name).write_text("x")
    tls = {"tls_cert": str(tmp_path / "tls.crt"), "tls_key": str(tmp_path / "tls.key")}
    root, ca, catalog = str(tmp_path / "root.json"), str(tmp_path / "ca.crt"), "https://central:8080/catalog"
    with pytest.raises(PosswarmError, match="root_of_trust = '/nowhere/root.json': no such file"):
        config.from_mapping({"open": True, **tls, "node_ca": ca, "catalog": catalog, "root_of_trust": "/nowhere/root.json"})
    for missing in ({"catalog": catalog}, {"node_ca": ca}):
        with pytest.raises(PosswarmError, match="root_of_trust: .*give node_ca and catalog too"):
            config.from_mapping({"open": True, **tls, **missing, "root_of_trust": root})
    c = config.from_mapping({"open": True, **tls, "node_ca": ca, "catalog": catalog, "root_of_trust": root})
    assert (c.root_of_trust, c.catalog_poll) == (root, 30)


def test_missing_file_is_a_one_line_error(tmp_path):
    with pytest.raises(PosswarmError, match="absent.toml: no such file"):
        config.load(tmp_path / "absent.toml")
