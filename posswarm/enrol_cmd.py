"""``posswarm enroll``: a freshly imaged till makes its own key, trades a one-time token for its certificate at
central, and writes its credential (the key never leaves the till)."""

from __future__ import annotations

import datetime
from pathlib import Path

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tuf.api.exceptions import RepositoryError
from tuf.api.metadata import Metadata, Root

from posswarm.central_url import verify_for
from posswarm.errors import PosswarmError
from posswarm.identity import enrolment_request
from posswarm.identity.certificate import load, verify
from posswarm.identity.credential import CERTIFICATE_FILE, write_credential
from posswarm.trust.roles import public_pem, role_public_keys


def add_command(sub) -> None:
    e = sub.add_parser("enroll", help="get this node's credential from central with a one-time token")
    e.add_argument("--central", required=True, help="central seeder URL, e.g. http://central:8080")
    e.add_argument("--token", required=True, help="the token from `posswarm-seeder enroll-token`")
    e.add_argument("--node-id", required=True, help="this node's id (node.id in its config)")
    e.add_argument("--out", required=True, type=Path, help="credential directory (the config's node.identity_dir)")
    e.add_argument("--store", default="", help="the store this node must be enrolled into (refused if the token "
                   "says otherwise)")
    e.add_argument("--role", default="", choices=("", "cache", "device"), help="the role it must get")
    e.add_argument("--class", dest="device_class", default="", help="its device class (default: the token's, else "
                   "pos for a device, cache for a cache)")
    e.add_argument("--central-ca", type=Path, default=None, help="the CA central's HTTPS certificate chains to "
                   "(KEYS/enrolment-ca.crt, copied onto the image with central.root; default: the system's)")
    e.add_argument("--root", type=Path, default=None, help="central's root of trust (central.root): the authority "
                   "must be an enrolment key it names")


def enroll_main(args) -> int:
    if (args.out / CERTIFICATE_FILE).exists():
        raise PosswarmError(f"enroll: {args.out} already holds a credential; move it aside first (a token enrols once)")
    key = Ed25519PrivateKey.generate()
    body = enrolment_request.build(key, token=args.token.strip(), node_id=args.node_id, store=args.store,
                                   role=args.role, device_class=args.device_class)
    url = f"{args.central.rstrip('/')}{enrolment_request.ENROL_PATH}"
    tls = verify_for(url, args.central_ca, what="enroll")
    try:
        with httpx.Client(timeout=30.0, verify=tls) as client:
            response = client.post(url, content=body, headers={"content-type": "application/json"})
    except httpx.HTTPError as exc:
        raise PosswarmError(f"enroll at {url}: {type(exc).__name__} ({exc}); is central reachable?") from None
    if response.status_code != 200:
        raise PosswarmError(f"enroll at {url}: refused ({_reason(response)})")
    certificate, authority = enrolment_request.parse_answer(response.content)
    authority_key = load(authority).public_key()
    if args.root is not None and public_pem(authority_key) not in {public_pem(k) for k in _enrolment_keys(args.root)}:
        raise PosswarmError(f"enroll at {url}: the authority that signed this certificate is not an enrolment key "
                            f"of {args.root}; is this your central?")
    identity = verify(certificate, [authority_key], now=datetime.datetime.now(datetime.UTC))
    if public_pem(load(certificate).public_key()) != public_pem(key.public_key()) or identity.node_id != args.node_id:
        raise PosswarmError(f"enroll at {url}: the certificate is not for this node's key and id; nothing written")
    write_credential(args.out, key, certificate, authority)
    print(f"enrolled {identity.describe()} (class {identity.device_class}, until "
          f"{identity.not_after:%Y-%m-%d}) -> {args.out}")
    return 0


def _reason(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"])[:300]
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}"


def _enrolment_keys(root: Path) -> list:
    try:
        return role_public_keys(Metadata[Root].from_bytes(root.read_bytes()).signed, "enrolment")
    except (OSError, ValueError, RepositoryError) as exc:
        raise PosswarmError(f"enroll: --root {root}: not a readable root of trust ({exc})") from None
