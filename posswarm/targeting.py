"""Which stores and device classes a release is meant for (store globs, class names)."""

from __future__ import annotations

from fnmatch import fnmatchcase

from posswarm.manifest import Targets


def targets_store(targets: Targets, store: str) -> bool:
    """True when any of the release's store patterns (ids or globs like ``S0*``, ``*``) matches ``store``."""
    return any(fnmatchcase(store, pattern) for pattern in targets.stores)


def targets_device(targets: Targets, store: str, device_class: str) -> bool:
    """True when the release is for this store and for this class of device."""
    return targets_store(targets, store) and any(fnmatchcase(device_class, c) for c in targets.device_classes)
