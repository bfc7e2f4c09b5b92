"""Whether a node may take a signed release at all: its store and class, no silent downgrades, no held version."""

from __future__ import annotations

import re

from posswarm.manifest import Manifest
from posswarm.targeting import targets_device, targets_store


def version_key(version: str) -> tuple:
    """Order versions like 2026.9 < 2026.10 < 2026.10.1: numeric runs compare as numbers."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", version) if p)


def is_downgrade(version: str, than: str) -> bool:
    """The one downgrade rule: ``version`` is older than ``than`` (a node never moves back by itself)."""
    return version_key(version) < version_key(than)


def refusal(manifest: Manifest, *, role: str, store: str, device_class: str, newest_held: str | None,
            held: set[str]) -> str | None:
    """None when the node may fetch ``manifest``; otherwise the one-line reason it must not.

    Checked on the *signed* targets (a catalog's listing is unsigned and only a hint). ``newest_held``
    is the newest version of this release name the node already runs (device) or holds (cache): an
    older version is a downgrade and needs a central instruction, never a catalog's say-so.
    """
    rid = manifest.release_id
    t = manifest.targets
    if role == "cache" and not targets_store(t, store):
        return f"release {rid}: signed for stores {list(t.stores)}, not store {store}; refused"
    if role == "device" and not targets_device(t, store, device_class):
        return (f"release {rid}: signed for stores {list(t.stores)} and classes {list(t.device_classes)}, "
                f"not {device_class} of store {store}; refused")
    if manifest.version in held:
        return f"release {rid}: held on this node after a rollback (publish a newer version)"
    if newest_held is not None and is_downgrade(manifest.version, newest_held):
        return f"release {rid}: older than {newest_held}, which this node already has; a downgrade is refused"
    return None
