"""Which stores and device classes a release is meant for (store globs, class names)."""

from __future__ import annotations

from fnmatch import fnmatchcase

from posswarm.manifest import Targets


def matches(patterns: tuple[str, ...] | list[str], value: str) -> bool:
    """True when any pattern (an id, or a glob like ``S0*`` or ``*``) matches ``value``: the one target rule."""
    return any(fnmatchcase(value, pattern) for pattern in patterns)


def targets_store(targets: Targets, store: str) -> bool:
    """True when any of the release's store patterns matches ``store``."""
    return matches(targets.stores, store)


def targets_device(targets: Targets, store: str, device_class: str) -> bool:
    """True when the release is for this store and for this class of device."""
    return targets_store(targets, store) and matches(targets.device_classes, device_class)
