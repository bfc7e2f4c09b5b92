"""Which node certificates central has revoked, from its signed targets, and the check against them (pure: no I/O).

The list travels inside central's TUF ``targets.json`` (field ``x-posswarm-revoked-nodes``), so it is signed
by the targets key and covered by snapshot and timestamp: a node is handed it by the same refresh, with the
same version and expiry rules, as the releases. An entry names a node (store and node id) and the moment it
was revoked; every certificate of that node issued at or before that moment is refused. Un-revoking is
enrolling the node again: its new certificate is issued later. The list only grows.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import Metadata, Root, Targets

from posswarm.errors import PosswarmError
from posswarm.identity.certificate import CertifiedNode, IdentityError, check_names

FIELD = "x-posswarm-revoked-nodes"
MAX_TARGETS_BYTES = 32 * 1024 * 1024  # as the node's python-tuf bound on targets.json
MAX_ENTRIES = 200_000  # every node of a large estate, several times over
MAX_REASON = 200


class RevocationError(PosswarmError):
    """A revocation list that cannot be believed (one line: which, why, what to do)."""


@dataclass(frozen=True)
class Revocation:
    store: str
    node_id: str
    revoked_at: int  # unix seconds: certificates of the node issued at or before this are revoked
    reason: str

    def to_dict(self) -> dict:
        return {"store": self.store, "node": self.node_id, "revoked_at": self.revoked_at, "reason": self.reason}


def entries_of(targets: Targets) -> tuple[Revocation, ...]:
    """The revocations in verified ``targets`` (none when the field is absent); a RevocationError if malformed."""
    raw = targets.unrecognized_fields.get(FIELD, [])
    if not isinstance(raw, list) or len(raw) > MAX_ENTRIES:
        raise RevocationError(f"central's revocation list: not a list of at most {MAX_ENTRIES} entries")
    out = []
    for i, item in enumerate(raw):
        try:
            store, node, at, reason = item["store"], item["node"], item["revoked_at"], item["reason"]
            check_names(node, store, "device", "any-class")
            if not isinstance(at, int) or isinstance(at, bool) or at < 0:
                raise ValueError("revoked_at is not a time in seconds")
            if not isinstance(reason, str) or len(reason) > MAX_REASON:
                raise ValueError(f"reason is not text of at most {MAX_REASON} characters")
        except (TypeError, KeyError, ValueError, IdentityError) as exc:
            raise RevocationError(f"central's revocation list: entry {i} unreadable ({exc})") from None
        out.append(Revocation(store, node, at, reason))
    return tuple(out)


def verify(targets_bytes: bytes, root: Root, *, now: datetime.datetime | None,
           newest_version: int = 0) -> tuple[int, tuple[Revocation, ...]]:
    """(targets version, revocations) of ``targets_bytes`` if the root's targets role signed it, it has not
    expired at ``now`` and is no older than ``newest_version``; a RevocationError naming why not.

    ``now=None`` skips the expiry: central reading its own repository, where an old targets must never make it
    forget whom it revoked."""
    if len(targets_bytes) > MAX_TARGETS_BYTES:
        raise RevocationError(f"central's revocation list: targets.json is {len(targets_bytes)} bytes, over "
                              f"{MAX_TARGETS_BYTES}; refused unread")
    try:
        md = Metadata[Targets].from_bytes(targets_bytes)
        root.verify_delegate("targets", md.signed_bytes, md.signatures)
    except (ValueError, tuf_errors.RepositoryError) as exc:
        raise RevocationError(f"central's revocation list: targets.json refused ({type(exc).__name__}: "
                              f"{str(exc)[:160]}); a forged or damaged copy") from None
    if now is not None and md.signed.is_expired(now):
        raise RevocationError(f"central's revocation list: targets.json expired at {md.signed.expires:%Y-%m-%dT%H:%M:%SZ}; "
                              "re-sign it (any `release` command or `enroll-revoke`)")
    if md.signed.version < newest_version:
        raise RevocationError(f"central's revocation list: targets version {md.signed.version} is older than "
                              f"version {newest_version} already seen; a replayed copy")
    return md.signed.version, entries_of(md.signed)


def added(old: tuple[Revocation, ...], new: Revocation) -> tuple[Revocation, ...]:
    """``old`` with ``new`` appended; a node already revoked keeps its first entry (the list only grows)."""
    if any((r.store, r.node_id) == (new.store, new.node_id) for r in old):
        return old
    return (*old, new)


class RevokedNodes:
    """The revocation list a node or central checks peers against; replaced in place when a newer one verifies."""

    def __init__(self, entries: tuple[Revocation, ...] = ()) -> None:
        self._by_node: dict[tuple[str, str], Revocation] = {}
        self.replace(entries)

    def replace(self, entries: tuple[Revocation, ...]) -> None:
        self._by_node = {(r.store, r.node_id): r for r in entries}

    def __len__(self) -> int:
        return len(self._by_node)

    def entries(self) -> tuple[Revocation, ...]:
        return tuple(self._by_node.values())

    def is_revoked(self, node: CertifiedNode) -> str | None:
        """Why ``node``'s certificate is revoked (one line), or None."""
        entry = self._by_node.get((node.store, node.node_id))
        if entry is None:
            return None
        if node.issued_at is not None and node.issued_at.timestamp() > entry.revoked_at:
            return None  # enrolled again after the revocation
        at = datetime.datetime.fromtimestamp(entry.revoked_at, datetime.UTC)
        why = f": {entry.reason}" if entry.reason else ""
        return (f"{node.describe()}: certificate revoked by central at {at:%Y-%m-%dT%H:%M:%SZ}{why} (enrol it again "
                "to restore it)")
