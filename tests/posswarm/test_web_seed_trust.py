"""The web seeds' CA bundle: central's CA alone, or with a CDN's CAs; bounded, parsed, refused in one line."""

from __future__ import annotations

import pytest
from cryptography import x509

from posswarm import web_seed_trust
from posswarm.errors import PosswarmError
from seeder.keys_cli import init_keys


@pytest.fixture(scope="module")
def authorities(tmp_path_factory):
    root = tmp_path_factory.mktemp("cas")
    return [init_keys(root / name / "keys", root / name / "releases").authority for name in ("central", "cdn")]


def test_without_a_web_seed_ca_libtorrent_trusts_centrals_alone(tmp_path, authorities):
    central, _ = authorities
    assert web_seed_trust.write_bundle(central, None, tmp_path) == central
    assert list(tmp_path.iterdir()) == []


def test_the_bundle_holds_centrals_ca_and_the_cdns(tmp_path, authorities):
    central, cdn = authorities
    bundle = web_seed_trust.write_bundle(central, cdn, tmp_path)
    held = {c.subject for c in x509.load_pem_x509_certificates(bundle.read_bytes())}
    assert held == {x509.load_pem_x509_certificate(p.read_bytes()).subject for p in (central, cdn)}
    assert len(x509.load_pem_x509_certificates(bundle.read_bytes())) == 2


@pytest.mark.parametrize(("content", "reason"), [
    (b"", "not PEM certificates"),
    (b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n", "not PEM certificates"),
    (b"x" * (web_seed_trust.MAX_BUNDLE_BYTES + 1), "over 4194304 bytes; not a CA bundle"),
])
def test_a_file_that_is_not_a_ca_bundle_is_named_in_one_line(tmp_path, authorities, content, reason):
    bad = tmp_path / "cdn.pem"
    bad.write_bytes(content)
    with pytest.raises(PosswarmError, match=f"^central.web_seed_ca {bad}: {reason}"):
        web_seed_trust.write_bundle(authorities[0], bad, tmp_path)
    assert not (tmp_path / web_seed_trust.BUNDLE_NAME).exists()
