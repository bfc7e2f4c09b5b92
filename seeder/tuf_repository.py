"""Central's TUF repository under RELEASES/.tuf: root, targets, snapshot and timestamp metadata, signed and written.

``targets`` lists every release on disk (its manifest and rollout as targets, with length, SHA-256 and the
catalog fields in ``custom``), so what a node decides rests on signed data only. Versions only grow. The
offline keys (root, targets, snapshot) sign at publish, rollout and key changes; the online timestamp key is
used only by the running seeder (``renew_timestamp``).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

from tuf.api.metadata import Metadata, MetaFile, Role, Root, Snapshot, TargetFile, Targets, Timestamp

from posswarm.errors import PosswarmError
from posswarm.fsync import replace_synced
from posswarm.identity import revocations
from posswarm.identity.revocations import Revocation
from posswarm.keys import KeyRing
from posswarm.manifest import verify_manifest
from posswarm.release import MANIFEST_NAME
from posswarm.rollout import ROLLOUT_NAME, verify_rollout
from posswarm.trust.roles import EXTRA_ROLES, ROLES, release_keys, set_extra_role_key, signer, tuf_key
from posswarm.trust.state import digest_of

TUF_DIR = ".tuf"  # a release name cannot start with '.', so no release ever collides with it
ROOT_EXPIRY = timedelta(days=5 * 365)
OFFLINE_EXPIRY = timedelta(days=365)  # targets and snapshot: re-signed at every publish and rollout change
DEFAULT_TIMESTAMP_EXPIRY_S = 86400
MAX_METADATA_BYTES = 32 * 1024 * 1024
# A new root (a rotated timestamp key) needs a timestamp signed by the new key at once.
ROOT_VERSION_FIELD = "x-posswarm-root-version"


def now_utc() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


class Repository:
    """The metadata files of one RELEASES directory; every change holds the repository lock."""

    def __init__(self, releases: Path) -> None:
        self.releases = Path(releases)
        self.dir = self.releases / TUF_DIR

    def exists(self) -> bool:
        return (self.dir / "root.json").is_file()

    def read(self, name: str) -> bytes:
        path = self.dir / name
        try:
            if path.stat().st_size > MAX_METADATA_BYTES:
                raise PosswarmError(f"TUF metadata {path}: too large; the repository is damaged")
            return path.read_bytes()
        except FileNotFoundError:
            raise PosswarmError(f"TUF metadata {path}: missing (run `posswarm-seeder keys init` for {self.releases})") from None
        except OSError as exc:
            raise PosswarmError(f"TUF metadata {path}: cannot read it ({exc.strerror}; check permissions)") from None

    def load(self, role: str, cls):
        try:
            return Metadata[cls].from_bytes(self.read(f"{role}.json"))
        except ValueError as exc:
            raise PosswarmError(f"TUF metadata {self.dir / (role + '.json')}: unreadable ({exc}); restore it") from None

    def root(self) -> Metadata[Root]:
        return self.load("root", Root)

    def keyring(self) -> KeyRing:
        return release_keys(self.root().signed)

    def write(self, name: str, md: Metadata) -> None:
        try:
            replace_synced(self.dir / name, md.to_bytes())
        except OSError as exc:
            raise PosswarmError(f"TUF metadata {self.dir / name}: cannot write it ({exc.strerror}; check disk space)") from None

    def files(self) -> dict[str, bytes]:
        """What ``/tuf/`` serves: every ``N.root.json`` and the current timestamp, snapshot and targets."""
        out = {}
        for path in sorted(self.dir.glob("*.root.json")):
            out[path.name] = path.read_bytes()
        for name in ("timestamp.json", "snapshot.json", "targets.json"):
            if (self.dir / name).exists():
                out[name] = (self.dir / name).read_bytes()
        return out

    def stamp(self) -> tuple:
        """(name, mtime_ns, size, inode) of every metadata file: changes whenever one is rewritten."""
        return tuple(sorted((p.name, st.st_mtime_ns, st.st_size, st.st_ino)
                            for p in self.dir.glob("*.json") if (st := p.stat())))

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Two operators (a publish and a promote) must not both write targets version N+1."""
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # ---- changes -----------------------------------------------------------------------------

    def init(self, keys: dict[str, object], *, more_root_keys: tuple = (), root_threshold: int = 1,
             timestamp_expiry_s: int = DEFAULT_TIMESTAMP_EXPIRY_S) -> Metadata[Root]:
        """Root version 1 naming one key per role (threshold 1; the root role may hold more keys and need
        ``root_threshold`` of them), and empty targets, snapshot and timestamp."""
        if self.exists():
            raise PosswarmError(f"TUF repository {self.dir}: already initialised (rotate keys with "
                                "`posswarm-seeder keys rotate`, never re-initialise: nodes would refuse it)")
        root_keys = [keys["root"], *more_root_keys]
        if not 1 <= root_threshold <= len(root_keys):
            raise PosswarmError(f"--root-threshold {root_threshold}: must be 1..{len(root_keys)} (the root keys made)")
        root = Root(version=1, expires=now_utc() + ROOT_EXPIRY, consistent_snapshot=False,
                    roles={role: Role([], root_threshold if role == "root" else 1) for role in ROLES},
                    unrecognized_fields={})
        for role in ROLES:
            root.add_key(tuf_key(keys[role].public_key()), role)
        for role in EXTRA_ROLES:
            set_extra_role_key(root, role, keys[role].public_key())
        for key in more_root_keys:
            root.add_key(tuf_key(key.public_key()), "root")
        md = Metadata(root)
        for key in root_keys:
            md.sign(signer(key), append=True)
        with self.lock():
            self.write_root(md)
            self._sign_targets(keys["targets"], keys["snapshot"], None)
            self.renew_timestamp(keys["timestamp"], timestamp_expiry_s, force=True)
        return md

    def write_root(self, md: Metadata[Root]) -> None:
        self.write(f"{md.signed.version}.root.json", md)
        self.write("root.json", md)

    def update_targets(self, targets_key, snapshot_key) -> int:
        """Re-list every release on disk in a new targets version, and a new snapshot naming it; the version."""
        with self.lock():
            return self._sign_targets(targets_key, snapshot_key, self.load("targets", Targets).signed)

    def revoked(self) -> tuple[Revocation, ...]:
        """The node revocations the current targets carry."""
        return revocations.entries_of(self.load("targets", Targets).signed)

    def revoke_node(self, entry: Revocation, targets_key, snapshot_key) -> tuple[int, bool]:
        """A new targets version whose revocation list holds ``entry`` (and every earlier one): (version, whether
        the node was newly revoked)."""
        with self.lock():
            old = self.load("targets", Targets).signed
            before = revocations.entries_of(old)
            now_listed = revocations.added(before, entry)
            return self._sign_targets(targets_key, snapshot_key, old, now_listed), now_listed != before

    def _sign_targets(self, targets_key, snapshot_key, old: Targets | None,
                      revoked: tuple[Revocation, ...] | None = None) -> int:
        """Targets version N+1 listing every release on disk and carrying ``revoked`` (default: ``old``'s list, so
        no publish or rollout change ever drops a revocation), and a snapshot naming it."""
        if revoked is None:
            revoked = revocations.entries_of(old) if old is not None else ()
        ring = self.keyring()
        listed: dict[str, TargetFile] = {}
        for manifest_path in sorted(self.releases.glob(f"*/*/{MANIFEST_NAME}")):
            for path, target in release_targets(manifest_path.parent, ring).items():
                listed[path] = target
        targets = Targets(version=(old.version if old is not None else 0) + 1, expires=now_utc() + OFFLINE_EXPIRY,
                          targets=listed,
                          unrecognized_fields={revocations.FIELD: [r.to_dict() for r in revoked]} if revoked else {})
        md = Metadata(targets)
        md.sign(signer(targets_key))
        self.write("targets.json", md)
        try:
            old_snapshot = self.load("snapshot", Snapshot).signed.version
        except PosswarmError:
            old_snapshot = 0
        snapshot = Metadata(Snapshot(version=old_snapshot + 1, expires=now_utc() + OFFLINE_EXPIRY,
                                     meta={"targets.json": MetaFile(version=targets.version)}))
        snapshot.sign(signer(snapshot_key))
        self.write("snapshot.json", snapshot)
        return targets.version

    def renew_timestamp(self, timestamp_key, expiry_s: float, *, force: bool = False, now: datetime | None = None) -> bool:
        """Sign a new timestamp when the snapshot changed, the root changed, half its life is gone, or ``force``."""
        now = now or now_utc()
        snapshot_version = self.load("snapshot", Snapshot).signed.version
        try:
            old = self.load("timestamp", Timestamp)
        except PosswarmError:
            old = None
        if old is not None and not force:
            left = (old.signed.expires - now).total_seconds()
            root_changed = old.signed.unrecognized_fields.get(ROOT_VERSION_FIELD) != self.root().signed.version
            same = old.signed.snapshot_meta.version == snapshot_version
            if same and not root_changed and left > expiry_s / 2:
                return False
        version = (old.signed.version if old is not None else 0) + 1
        ts = Metadata(Timestamp(version=version, expires=now + timedelta(seconds=expiry_s),
                                snapshot_meta=MetaFile(version=snapshot_version),
                                unrecognized_fields={ROOT_VERSION_FIELD: self.root().signed.version}))
        ts.sign(signer(timestamp_key))
        self.write("timestamp.json", ts)
        return True


def release_targets(directory: Path, ring: KeyRing) -> dict[str, TargetFile]:
    """The targets of one release directory: its manifest, and its rollout bound to that manifest's digest.

    Both are checked against the release keys first: targets never lists what a node would refuse."""
    name, version = directory.parent.name, directory.name
    manifest_bytes = (directory / MANIFEST_NAME).read_bytes()
    m = verify_manifest(manifest_bytes, ring)
    digest = digest_of(manifest_bytes)
    prefix = f"{name}/{version}"
    custom = {
        "kind": m.kind, "size": m.total_size, "info_hash_v1": m.info_hash_v1.hex(),
        "targets": {"stores": list(m.targets.stores), "device_classes": list(m.targets.device_classes),
                    "ring": m.targets.ring},
    }
    out = {f"{prefix}/{MANIFEST_NAME}": TargetFile(digest.length, {"sha256": digest.sha256},
                                                   f"{prefix}/{MANIFEST_NAME}", {"custom": custom})}
    try:
        rollout_bytes = (directory / ROLLOUT_NAME).read_bytes()
    except FileNotFoundError:
        return out
    r = verify_rollout(rollout_bytes, ring, name=name, version=version)
    rd = digest_of(rollout_bytes)
    out[f"{prefix}/{ROLLOUT_NAME}"] = TargetFile(
        rd.length, {"sha256": rd.sha256}, f"{prefix}/{ROLLOUT_NAME}",
        {"custom": {"sequence": r.sequence, "state": r.state, "ring": r.ring, "manifest_sha256": digest.sha256}})
    return out
