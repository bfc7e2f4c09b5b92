"""``posswarm-seeder keys init|rotate|revoke``: central's role keys and the root of trust every node holds."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

from securesystemslib.signer import Key
from tuf.api.exceptions import RepositoryError
from tuf.api.metadata import Metadata, Root

from posswarm.errors import PosswarmError
from posswarm.fsync import replace_synced
from posswarm.identity.certificate import authority_certificate
from posswarm.keys import generate_keypair, key_id, load_private_key
from posswarm.manifest import Manifest, sign_manifest
from posswarm.release import MANIFEST_NAME
from posswarm.rollout import ROLLOUT_NAME, Rollout, sign_rollout
from posswarm.trust.roles import (
    EXTRA_ROLES,
    RETIRED_FIELD,
    ROLES,
    ed25519_of,
    role_keyids,
    set_extra_role_key,
    signer,
    tuf_key,
)
from seeder import enrolment
from seeder.tuf_repository import ROOT_EXPIRY, Repository, now_utc

ROOT_FILE = "root.json"  # in the keys directory: the copy to put on every node (central.root)
AUTHORITY_FILE = enrolment.AUTHORITY_IN_KEYS  # the enrolment key's CA certificate, handed to every node
ALL_ROLES = ROLES + tuple(EXTRA_ROLES)
TLS_CERTIFICATE, TLS_KEY = enrolment.TLS_CERTIFICATE, enrolment.TLS_KEY


def add_command(sub) -> None:
    keys = sub.add_parser("keys", help="central's role keys and root of trust (init, rotate, revoke)")
    actions = keys.add_subparsers(dest="action", required=True)
    i = actions.add_parser("init", help="create root/targets/snapshot/timestamp/enrolment/sku keys and the first "
                           "root.json")
    r = actions.add_parser("rotate", help="replace a role's key: a new root signed by the old root key and the new keys")
    r.add_argument("role", choices=ALL_ROLES)
    v = actions.add_parser("revoke", help="take a key out of every role, and re-sign what it signed")
    v.add_argument("key_id", help="the key's id (posswarm key id, as `keys` prints it, or its TUF key id)")
    t = actions.add_parser("tls", help="central's HTTPS certificate (KEYS/tls.crt, tls.key), under the enrolment "
                           "authority every node holds")
    t.add_argument("--host", action="append", required=True,
                   help="a DNS name or IP address nodes reach central by (repeatable)")
    t.add_argument("--days", type=int, default=365, help="certificate life in days (default 365)")
    t.add_argument("--keys", required=True, type=Path, help="keys directory (enrolment.key, enrolment-ca.crt)")
    for a in (i, r, v):
        a.add_argument("--keys", required=True, type=Path, help="keys directory (ROLE.key files and root.json)")
        a.add_argument("--releases", required=True, type=Path, help="releases directory (the seeder's RELEASES)")
    i.add_argument("--timestamp-expiry-s", type=int, default=86400, help="first timestamp's life (default: 1 day)")
    i.add_argument("--root-keys", type=int, default=1,
                   help="root keys to make (root.key, root.2.key, ...; one per officer; default 1)")
    i.add_argument("--root-threshold", type=int, default=1,
                   help="how many root keys must sign a new root (default 1)")


def run(args) -> int:
    return {"init": _init, "rotate": _rotate, "revoke": _revoke, "tls": _tls}[args.action](args)


@dataclass(frozen=True)
class CentralKeys:
    """Where ``keys init`` put central's keys and the root of trust (what the lab and netsim pass around)."""

    dir: Path

    def key(self, role: str) -> Path:
        return self.dir / f"{role}.key"

    @property
    def root(self) -> Path:
        return self.dir / ROOT_FILE

    @property
    def authority(self) -> Path:
        return self.dir / AUTHORITY_FILE

    @property
    def tls(self) -> tuple[Path, Path]:
        """(certificate, key) of central's HTTPS, once `keys tls` made them."""
        return self.dir / TLS_CERTIFICATE, self.dir / TLS_KEY

    def issue_tls(self, hosts: list[str], days: int = 365, out: Path | None = None) -> tuple[Path, Path]:
        """Central's HTTPS certificate and key (in KEYS, or ``out`` for another central host or a proxy)."""
        enrolment.issue_tls(self.dir, hosts, days=days, out=out)
        folder = self.dir if out is None else Path(out)
        return folder / TLS_CERTIFICATE, folder / TLS_KEY

    def enrol(self, out: Path, *, node_id: str, store: str, role: str, device_class: str) -> Path:
        """Give one node its credential in ``out`` (as `posswarm-seeder enroll` does)."""
        return enrolment.enrol(self.dir, out, node_id=node_id, store=store, role=role, device_class=device_class)


def init_keys(keys_dir: Path, releases: Path, *, timestamp_expiry_s: int = 86400, root_keys: int = 1,
              root_threshold: int = 1) -> CentralKeys:
    """One Ed25519 key per role in ``keys_dir`` (``root_keys`` for root), the first root.json there, and
    RELEASES/.tuf signed with them."""
    repo = Repository(releases)
    if repo.exists():
        raise PosswarmError(f"TUF repository {repo.dir}: already initialised (rotate keys with `posswarm-seeder keys "
                            "rotate`, never re-initialise: nodes would refuse it)")
    Path(releases).mkdir(parents=True, exist_ok=True)
    if not 1 <= root_keys <= 16:
        raise PosswarmError(f"--root-keys {root_keys}: choose 1..16")
    if not 1 <= root_threshold <= root_keys:
        raise PosswarmError(f"--root-threshold {root_threshold}: must be 1..{root_keys} (the root keys made)")
    keys = {role: load_private_key(generate_keypair(keys_dir, role)[0]) for role in ALL_ROLES}
    more = tuple(load_private_key(generate_keypair(keys_dir, f"root.{i}")[0]) for i in range(2, root_keys + 1))
    repo.init(keys, more_root_keys=more, root_threshold=root_threshold, timestamp_expiry_s=timestamp_expiry_s)
    _copy_root(repo, keys_dir)
    _write_authority(Path(keys_dir), keys["enrolment"])
    return CentralKeys(Path(keys_dir))


def _write_authority(keys_dir: Path, enrolment_key) -> None:
    """The enrolment key's CA certificate, as long-lived as the root that names the key."""
    pem = authority_certificate(enrolment_key, now=now_utc(), lifetime=ROOT_EXPIRY)
    replace_synced(keys_dir / AUTHORITY_FILE, pem)


def _init(args) -> int:
    keys = init_keys(args.keys, args.releases, timestamp_expiry_s=args.timestamp_expiry_s,
                     root_keys=args.root_keys, root_threshold=args.root_threshold)
    for role in ALL_ROLES:
        print(f"{role}: {keys.key(role)} (key id {key_id(load_private_key(keys.key(role)).public_key())})")
    print(f"root of trust version 1 -> {keys.root} (copy it to every node as central.root)")
    print(f"enrolment authority -> {keys.authority} (handed to each node by `posswarm-seeder enroll`)")
    return 0


def _tls(args) -> int:
    if not 1 <= args.days <= 3650:
        raise PosswarmError(f"--days {args.days}: choose 1..3650")
    certificate, key = CentralKeys(args.keys).issue_tls(args.host, days=args.days)
    print(f"central TLS certificate for {', '.join(args.host)} -> {certificate} (key {key}); serve with "
          f"`posswarm-seeder serve --tls-cert {certificate} --tls-key {key}`")
    return 0


def _rotate(args) -> int:
    repo = Repository(args.releases)
    old_root_keys = _root_keys(args.keys)
    _check_quorum(repo.root(), old_root_keys, args.keys)  # before any key file moves
    old_key_file = args.keys / f"{args.role}.key"
    old_key = _key(args.keys, args.role)
    retired = args.keys / f"{args.role}.{key_id(old_key.public_key())}.retired.key"
    os.replace(old_key_file, retired)  # kept for the record; it signs nothing from now on
    (args.keys / f"{args.role}.pub").unlink(missing_ok=True)
    priv, _ = generate_keypair(args.keys, args.role)
    new_key = load_private_key(priv)
    with repo.lock():
        md = _next_root(repo)
        root = md.signed
        if args.role in EXTRA_ROLES:
            set_extra_role_key(root, args.role, new_key.public_key())
        else:
            for keyid in list(root.roles[args.role].keyids):
                key = root.keys[keyid]
                root.revoke_key(keyid, args.role)
                if args.role == "targets":  # still good for the inner signatures of what it signed before
                    root.unrecognized_fields.setdefault(RETIRED_FIELD, {})[keyid] = key.to_dict()
            root.add_key(tuf_key(new_key.public_key()), args.role)
        # The old root's threshold and, for the root role, the new key too: a node checks both.
        signers = old_root_keys + ([new_key] if args.role == "root" else [])
        _sign_and_write(repo, md, signers)
    _copy_root(repo, args.keys)
    if args.role == "enrolment":  # certificates it issued no longer verify: nodes enrol again
        _write_authority(args.keys, new_key)
    if args.role in ("targets", "snapshot"):
        repo.update_targets(_key(args.keys, "targets"), _key(args.keys, "snapshot"))
    print(f"{args.role}: new key {key_id(new_key.public_key())} -> {priv}; old key {key_id(old_key.public_key())} "
          f"kept as {retired}; root of trust version {md.signed.version} -> {args.keys / ROOT_FILE}")
    if args.role == "timestamp":
        print("the running seeder picks up the new timestamp key from its --timestamp-key file")
    return 0


def _revoke(args) -> int:
    repo = Repository(args.releases)
    wanted = args.key_id.strip().lower()
    with repo.lock():
        md = _next_root(repo)
        root = md.signed
        _check_quorum(repo.root(), _root_keys(args.keys), args.keys)
        hits = [(keyid, role) for role in ROLES for keyid in root.roles[role].keyids
                if wanted in (keyid, _short(root, keyid))]
        for role in EXTRA_ROLES:
            if any(wanted in (keyid, _short(root, keyid)) for keyid in role_keyids(root, role)):
                raise PosswarmError(f"key {args.key_id}: is the {role} role's only key; rotate it instead "
                                    f"(`posswarm-seeder keys rotate {role}`)")
        retired = root.unrecognized_fields.get(RETIRED_FIELD, {})
        retired_hits = [k for k in retired if wanted in (k, _short_of(retired[k]))]
        if not hits and not retired_hits:
            raise PosswarmError(f"key {args.key_id}: not in the root of trust (see `posswarm-seeder keys` output for ids)")
        for keyid, role in hits:
            if len(root.roles[role].keyids) <= root.roles[role].threshold:
                raise PosswarmError(f"key {args.key_id}: is one of the {role} role's last {root.roles[role].threshold} "
                                    f"key(s); rotate the {role} key first (`posswarm-seeder keys rotate {role}`)")
            root.revoke_key(keyid, role)
        short_ids = {_short(root, k) for k, _ in hits if k in root.keys} | {_short_of(retired[k]) for k in retired_hits}
        for k in retired_hits:
            del retired[k]
        _sign_and_write(repo, md, _root_keys(args.keys))
    _copy_root(repo, args.keys)
    resigned = _resign_releases(args.releases, short_ids, _key(args.keys, "targets"))
    repo.update_targets(_key(args.keys, "targets"), _key(args.keys, "snapshot"))
    print(f"key {args.key_id}: revoked; root of trust version {md.signed.version} -> {args.keys / ROOT_FILE}; "
          f"re-signed {resigned} manifest/rollout document(s) it had signed")
    return 0


def _resign_releases(releases: Path, revoked: set[str], key) -> int:
    """Re-sign with ``key`` every manifest and rollout whose inner signature is by a revoked key."""
    count = 0
    for manifest_path in sorted(releases.glob(f"*/*/{MANIFEST_NAME}")):
        manifest = Manifest.from_bytes(manifest_path.read_bytes())
        if manifest.key_id in revoked:
            replace_synced(manifest_path, sign_manifest(manifest, key).to_bytes())
            count += 1
        rollout_path = manifest_path.parent / ROLLOUT_NAME
        if rollout_path.exists() and (rollout := Rollout.from_bytes(rollout_path.read_bytes())).key_id in revoked:
            # One sequence higher: a seeder or node holding the old document takes only a higher one.
            renewed = sign_rollout(replace(rollout, sequence=rollout.sequence + 1), key)
            replace_synced(rollout_path, renewed.to_bytes())
            count += 1
    return count


def _next_root(repo: Repository) -> Metadata[Root]:
    md = repo.root()
    md.signed.version += 1
    md.signed.expires = now_utc() + ROOT_EXPIRY
    md.signatures.clear()
    return md


def _sign_and_write(repo: Repository, md: Metadata[Root], keys) -> None:
    """Sign the next root and write it, once both the old root's threshold and its own are met (a node
    checks both: a root that fails them would strand every store)."""
    for key in keys:
        md.sign(signer(key), append=True)
    old = repo.root()
    try:
        old.verify_delegate("root", md)
        md.verify_delegate("root", md)
    except RepositoryError as exc:  # python-tuf's UnsignedMetadataError: a threshold missed
        raise PosswarmError(f"root of trust version {md.signed.version}: not enough root signatures ({exc}); "
                            "gather the root keys of the threshold into --keys and run it again") from None
    repo.write_root(md)


def _check_quorum(root: Metadata[Root], keys: list, keys_dir: Path) -> None:
    role = root.signed.roles["root"]
    present = {tuf_key(k.public_key()).keyid for k in keys} & set(role.keyids)
    if len(present) < role.threshold:
        raise PosswarmError(f"root keys in {keys_dir}: {len(present)} of the {role.threshold} the root threshold "
                            "needs; gather them (root.key, root.2.key, ...) into --keys and run it again")


def _short(root: Root, keyid: str) -> str:
    return _short_of(root.keys[keyid].to_dict())


def _short_of(key_dict: dict) -> str:
    public = ed25519_of(Key.from_dict("x", dict(key_dict)))
    return key_id(public) if public is not None else ""


def _root_keys(keys_dir: Path) -> list:
    """Every root key in the keys directory (root.key, root.2.key, ...): together they meet the old root's
    threshold. Where the root keys live apart (one per officer), gather them for the signing."""
    return [load_private_key(p) for p in sorted(keys_dir.glob("root*.key")) if ".retired." not in p.name]


def _key(keys_dir: Path, role: str):
    return load_private_key(keys_dir / f"{role}.key")


def _copy_root(repo: Repository, keys_dir: Path) -> None:
    shutil.copyfile(repo.dir / "root.json", keys_dir / ROOT_FILE)
