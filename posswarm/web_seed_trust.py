"""The CA bundle libtorrent checks HTTPS web seeds against: central's CA, and the CAs of a CDN or mirror if named.

libtorrent takes the process's OpenSSL default store (SSL_CERT_FILE), so one file must hold every CA a web seed's
certificate may chain to. A web seed's bytes are checked against the signed torrent's hashes whatever TLS says; the
TLS is for privacy on the WAN, which is why a CDN's public CAs may be trusted here and nowhere else in the node.
"""

from __future__ import annotations

from pathlib import Path

from cryptography import x509

from posswarm.capped_read import read_capped
from posswarm.errors import PosswarmError
from posswarm.fsync import replace_synced

MAX_BUNDLE_BYTES = 4 << 20  # Debian's whole ca-certificates.crt is ~220 KB
BUNDLE_NAME = "web-seed-ca.pem"


def read_certificates(path: Path, what: str) -> bytes:
    """The PEM certificates in ``path``, bounded and parsed; a one-line PosswarmError naming ``what`` if not."""
    data = read_capped(path, MAX_BUNDLE_BYTES, what, too_big="not a CA bundle")
    try:
        if not x509.load_pem_x509_certificates(data):
            raise ValueError("no certificate")
    except ValueError as exc:
        raise PosswarmError(f"{what} {path}: not PEM certificates ({exc}); give a CA bundle such as "
                            "/etc/ssl/certs/ca-certificates.crt") from None
    return data


def write_bundle(central_ca: Path, web_seed_ca: Path | None, directory: Path) -> Path:
    """The file to point SSL_CERT_FILE at: central's CA alone, or DIR/web-seed-ca.pem with the web seeds' CAs too."""
    central = read_certificates(central_ca, "central.tls_ca")
    if web_seed_ca is None:
        return central_ca
    extra = read_certificates(web_seed_ca, "central.web_seed_ca")
    out = directory / BUNDLE_NAME
    replace_synced(out, central.rstrip(b"\n") + b"\n" + extra)
    return out
