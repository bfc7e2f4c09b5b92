"""Central's signed state as a node acts on it: the releases its verified TUF targets list, and how fresh it is (pure).

A target ``NAME/VERSION/manifest.msgpack`` is a release: its length and SHA-256 bind the manifest bytes,
and its ``custom`` carries what the catalog used to say unsigned (kind, size, targets, info-hash, rollout
sequence). A target ``NAME/VERSION/rollout.msgpack`` binds the release's rollout bytes, and its ``custom``
names the manifest digest it belongs to.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from tuf.api.metadata import TargetFile, Targets

from posswarm.catalog.model import CatalogEntry, Digest
from posswarm.errors import PosswarmError
from posswarm.identity.revocations import Revocation
from posswarm.manifest import Targets as ReleaseTargets
from posswarm.manifest import check_component
from posswarm.release import MANIFEST_NAME
from posswarm.rollout import ROLLOUT_NAME


class TrustError(PosswarmError):
    """Central's signed state refused: a bad signature, a replay, an expired or malformed document (a verdict)."""


@dataclass(frozen=True)
class CentralState:
    """What the newest verified timestamp, snapshot and targets say, and until when the timestamp holds."""

    releases: tuple[CatalogEntry, ...]
    versions: dict  # role -> version
    expires: float  # unix seconds: the timestamp's expiry
    skipped: tuple[str, ...] = ()  # targets that are not a release this build reads, one line each
    revoked: tuple[Revocation, ...] = ()  # node certificates central no longer vouches for

    def fresh(self, now: float, grace_s: float) -> bool:
        """Whether new installs may start: central's timestamp has not expired more than ``grace_s`` ago."""
        return now <= self.expires + grace_s


def digest_of(data: bytes) -> Digest:
    return Digest(len(data), hashlib.sha256(data).hexdigest())


def check_bytes(entry: CatalogEntry, what: str, expected: Digest | None, data: bytes) -> None:
    """TrustError unless ``data`` is the document central's signed targets list for ``entry``."""
    if expected is None:
        raise TrustError(f"release {entry.release_id}: its {what} is not listed in central's signed targets "
                         "(an unsigned catalog offered it; ignored)")
    if digest_of(data) != expected:
        raise TrustError(f"release {entry.release_id}: {what} does not match the digest in central's signed targets "
                         "(an old, forged or re-signed document; ignored)")


def releases_of(targets: Targets) -> tuple[tuple[CatalogEntry, ...], tuple[str, ...]]:
    """The releases in verified ``targets``, and one line per target that is not one this build reads."""
    manifests, rollouts, skipped = {}, {}, []
    for path, target in sorted(targets.targets.items()):
        name, _, rest = path.partition("/")
        version, _, filename = rest.partition("/")
        try:
            check_component(name, "release name")
            check_component(version, "release version")
            digest = _sha256(target)
            if filename == MANIFEST_NAME:
                manifests[(name, version)] = (target, digest)
            elif filename == ROLLOUT_NAME:
                rollouts[(name, version)] = (target, digest)
            else:
                raise PosswarmError("not a manifest or rollout")
        except PosswarmError as exc:
            skipped.append(f"target {path[:120]}: {exc}")
    entries = []
    for (name, version), (target, digest) in manifests.items():
        try:
            entries.append(_entry(name, version, target, digest, rollouts.get((name, version))))
        except (AttributeError, KeyError, TypeError, ValueError, PosswarmError) as exc:
            skipped.append(f"target {target.path[:120]}: custom fields unreadable ({exc}); this build skips it")
    return tuple(entries), tuple(skipped)


def _sha256(target: TargetFile) -> Digest:
    sha = target.hashes.get("sha256")
    if not isinstance(sha, str) or len(sha) != 64:
        raise PosswarmError("no sha256 hash")
    return Digest(target.length, sha)


def _entry(name: str, version: str, target: TargetFile, digest: Digest, rollout) -> CatalogEntry:
    c = target.custom
    t = c["targets"]
    sequence, rollout_digest = 0, None
    if rollout is not None:
        r_target, rollout_digest = rollout
        if r_target.custom.get("manifest_sha256") != digest.sha256:
            raise ValueError("its rollout is bound to another manifest")
        sequence = _count(r_target.custom["sequence"])
    return CatalogEntry(
        name=name, version=version, kind=_text(c["kind"]), size=_count(c["size"]),
        targets=ReleaseTargets(tuple(_text(s) for s in t["stores"]), tuple(_text(s) for s in t["device_classes"]),
                               _text(t["ring"])),
        info_hash_v1=_text(c["info_hash_v1"]), rollout_sequence=sequence, manifest=digest, rollout=rollout_digest,
    )


def _text(value) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= 256:
        raise ValueError("bad text field")
    return value


def _count(value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError("bad count")
    return value
