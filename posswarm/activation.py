"""Make a verified release what runs on a device: assemble it, switch ``current``, run the hooks (post-install,
then the privileged one through root, see posswarm/privileged.py) and the health check, and switch back (or hold
it) when one fails; or, for an OS image on a till with boot slots, write it into the other slot for a trial boot."""

from __future__ import annotations

from pathlib import Path

from posswarm import health, install, logs, privileged
from posswarm.config import NodeConfig
from posswarm.lifecycle import Installed
from posswarm.manifest import Manifest
from posswarm.slots.device import BootSlots
from posswarm.staged_payload import StagedPayload

log = logs.get("node")


def stage(manifest: Manifest, installed_root: Path, slots: BootSlots | None = None) -> StagedPayload:
    """Open where ``manifest``'s payload is written while it downloads: the boot slot not booted (an OS image on a
    till with boot slots, marked unbootable first) or a fresh staging directory in ``installed_root``."""
    if _into_slot(manifest, slots):
        return slots.begin(manifest)
    return StagedPayload.into_directory(manifest, install.staging_of(installed_root, manifest.version))


def _into_slot(manifest: Manifest, slots: BootSlots | None) -> bool:
    return slots is not None and manifest.kind == "image"


def activate_release(config: NodeConfig, manifest: Manifest, release_dir: Path, installed_root: Path,
                     slots: BootSlots | None = None, staged: StagedPayload | None = None) -> str | None:
    """Install ``manifest``'s payload from ``release_dir``; None when it runs (or, for an OS image on a till with
    boot slots, waits for its trial boot), else why it was rolled back.

    ``staged`` is what ``stage`` opened and the download wrote; what it lacks is written now.
    Raises PosswarmError or OSError for a failure that may pass (a full disk, a chunk gone bad on disk):
    nothing was switched then, and the life cycle retries.
    """
    m = manifest
    if _into_slot(m, slots):  # the health check runs at the trial boot (posswarm/slots/device.py)
        slots.install(m, release_dir, staged)
        return None
    path = install.assemble(m, release_dir, installed_root, staged)
    old = install.activate(installed_root, m.version)
    log.info("release.activated", release=m.release_id, previous=old or "")
    problem = None
    if config.post_install:
        problem = health.check(config.post_install, name=m.name, version=m.version, path=path, kind=m.kind,
                               timeout_s=config.health_timeout_s, what="post-install hook")
    if config.privileged_hook and problem is None:  # root applies what the sandboxed node cannot (a partition)
        problem = privileged.request_and_wait(config, name=m.name, version=m.version, kind=m.kind, path=path)
    if config.health_check and problem is None:
        problem = health.check(config.health_check, name=m.name, version=m.version, path=path, kind=m.kind,
                               timeout_s=config.health_timeout_s)
    if problem is None:
        return None
    if old is None:
        install.hold(installed_root, m.version)
        log.error("release.unhealthy", release=m.release_id, reason=problem, rolled_back_to="")
        return f"{problem}; nothing to roll back to"
    install.rollback(installed_root)
    log.error("release.unhealthy", release=m.release_id, reason=problem, rolled_back_to=old)
    return f"{problem}; rolled back to {old}"


def installed_of(installed_root: Path, slots: BootSlots | None = None) -> Installed:
    """What runs of one release name: the boot slots say for an OS image on them, ``installed/NAME`` otherwise;
    held versions are always those of ``installed/NAME/held``."""
    held = frozenset(install.held_versions(installed_root))
    name = installed_root.name
    if slots is not None and slots.holds(name):
        return slots.installed(name, held)
    return Installed(install.current_version(installed_root), install.previous_version(installed_root), held)
