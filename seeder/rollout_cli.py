"""``posswarm-seeder release promote|pause|resume|revoke|activate|show``: change a release's signed rollout at central."""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from posswarm import install_window
from posswarm.errors import PosswarmError
from posswarm.fsync import replace_synced
from posswarm.keys import load_private_key, load_public_key
from posswarm.manifest import Manifest, Targets, check_component
from posswarm.release import MANIFEST_NAME, read_manifest
from posswarm.rollout import FORMAT as ROLLOUT_FORMAT
from posswarm.rollout import ROLLOUT_NAME, Rollout, implied_rollout, sign_rollout, verify_rollout
from seeder import rollouts_config
from seeder.rollouts_config import RolloutsConfig
from seeder.tuf_repository import Repository

ACTIONS = ("promote", "pause", "resume", "revoke", "activate", "show")


def add_command(sub) -> None:
    release = sub.add_parser("release", help="change or show a release's rollout (rings, pause, revoke)")
    actions = release.add_subparsers(dest="action", required=True)
    helps = {
        "promote": "move the release to the next ring (or --to RING); stores of every ring so far get it",
        "pause": "stop the rollout: nodes keep what they have and start nothing new",
        "resume": "undo pause",
        "revoke": "withdraw the release: devices running it roll back to their previous release",
        "activate": "when devices switch to it: --when now, window (their install.window) or 'at 2026-12-02T02:00Z'",
        "show": "print the release's current rollout",
    }
    for action in ACTIONS:
        a = actions.add_parser(action, help=helps[action])
        a.add_argument("name", help="release name, e.g. pos-os")
        a.add_argument("version", help="release version, e.g. 2026.11")
        a.add_argument("--releases", required=True, type=Path, help="releases directory (the seeder's RELEASES)")
        if action == "show":
            a.add_argument("--key-pub", type=Path, default=None,
                           help="central.pub to check the rollout's signature (default: the release keys of RELEASES/.tuf)")
            continue
        a.add_argument("--key", required=True, type=Path, help="the release signing key (KEYS/targets.key) to sign the new rollout")
        a.add_argument("--snapshot-key", type=Path, default=None, help="the snapshot key (default: snapshot.key beside --key)")
        if action == "activate":
            a.add_argument("--when", required=True, help="now, window, or 'at YYYY-MM-DDTHH:MMZ' (UTC)")
            a.add_argument("--store", action="append", default=[], metavar="STORE",
                           help="only for this store (id or glob; repeatable), e.g. 'tonight, this store'")
        if action == "promote":
            a.add_argument("--to", default=None, metavar="RING", help="target ring (default: the next ring)")
            a.add_argument("--rollout-config", type=Path, default=None,
                           help="ring and group config (default: RELEASES/rollouts.toml)")


def add_publish_options(publish) -> None:
    """Options ``publish`` takes to start a rollout (with ``--ring``, which publish already has)."""
    publish.add_argument("--group", action="append", default=[],
                         help="target store group from rollouts.toml (repeatable; adds to --store)")
    publish.add_argument("--rollout-config", type=Path, default=None,
                         help="ring and group config (default: OUT/rollouts.toml when present)")


def publish_plan(args, private_key) -> tuple[Targets, Callable[[Manifest], bytes] | None]:
    """The manifest targets for ``publish``, and the first rollout document to write with it (None without a config).

    Without a rollouts config a release behaves as before rollouts existed: its manifest's targets, ring ``all``.
    """
    config = rollouts_config.for_releases(args.out, args.rollout_config)
    classes = tuple(args.classes) or ("*",)
    if config is None:
        if args.group:
            raise PosswarmError(f"--group {args.group[0]}: no rollouts config to define it "
                                f"(create {Path(args.out) / rollouts_config.CONFIG_NAME} or pass --rollout-config)")
        return Targets(tuple(args.store) or ("*",), classes, args.ring or "all"), None
    ring = config.check_ring(args.ring or config.rings[0])
    stores = tuple(dict.fromkeys((*args.store, *config.expand_groups(args.group)))) or ("*",)

    def first_rollout(manifest: Manifest) -> bytes:
        r = Rollout(manifest.name, manifest.version, 1, "active", ring, config.rings, config.reached(ring),
                    stores, classes, manifest.created)
        return sign_rollout(r, private_key).to_bytes()

    return Targets(stores, classes, ring), first_rollout


def run(args) -> int:
    check_component(args.name, "release name")
    check_component(args.version, "release version")
    directory = Path(args.releases) / args.name / args.version
    if not (directory / MANIFEST_NAME).is_file():
        raise PosswarmError(f"release {args.name} {args.version}: not published in {args.releases} "
                            f"(no {directory / MANIFEST_NAME}; check the name, version and --releases)")
    if args.action == "show":
        print(describe(current(directory, load_public_key(args.key_pub) if args.key_pub else trusted(args.releases))))
        return 0
    key = load_private_key(args.key)
    config = None
    if args.action == "promote":
        config = rollouts_config.for_releases(args.releases, args.rollout_config) or RolloutsConfig()
    r = change(directory, key, lambda old: transition(old, args.action, config=config, to=getattr(args, "to", None),
                                                      when=getattr(args, "when", None),
                                                      stores=tuple(getattr(args, "store", ()))),
               trusted=trusted(args.releases, key))
    print(f"{describe_line(r)} -> {directory / ROLLOUT_NAME}")
    from seeder.cli import update_signed_state

    update_signed_state(Path(args.releases), key, args.snapshot_key, key_path=args.key)
    return 0


def trusted(releases: Path, key=None):
    """The keys an existing rollout may be signed by: the repository's release keys (old ones included after a
    rotation), else just the signing key itself (a RELEASES without a TUF repository)."""
    repo = Repository(releases)
    if repo.exists():
        return repo.keyring()
    if key is None:
        raise PosswarmError(f"release show: {releases} has no TUF repository; pass --key-pub")
    return key.public_key()


def current(directory: Path, public_key) -> Rollout:
    """The release's verified rollout, or the one its manifest implies when it has none yet."""
    path = directory / ROLLOUT_NAME
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return implied_rollout(read_manifest(directory, public_key))
    except OSError as exc:
        raise PosswarmError(f"rollout {path}: cannot read it ({exc.strerror}; check permissions)") from None
    return verify_rollout(data, public_key, name=directory.parent.name, version=directory.name)


def change(directory: Path, private_key, step: Callable[[Rollout], Rollout], now: int | None = None, *,
           trusted=None) -> Rollout:
    """Apply ``step`` to the current rollout and write the result signed, one sequence higher, atomically."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        # Two operators changing one release at once must not both write sequence N+1.
        fcntl.flock(fd, fcntl.LOCK_EX)
        old = current(directory, trusted if trusted is not None else private_key.public_key())
        new = replace(step(old), sequence=old.sequence + 1, created=int(time.time()) if now is None else now)
        signed = sign_rollout(new, private_key)
        try:
            replace_synced(directory / ROLLOUT_NAME, signed.to_bytes())
        except OSError as exc:
            raise PosswarmError(f"rollout {directory / ROLLOUT_NAME}: cannot write it ({exc.strerror}; check disk space and permissions)") from None
        return signed
    finally:
        os.close(fd)  # also releases the lock


def transition(r: Rollout, action: str, *, config: RolloutsConfig | None = None, to: str | None = None,
               when: str | None = None, stores: tuple[str, ...] = ()) -> Rollout:
    """The rollout after ``action``; a one-line PosswarmError when the action makes no sense in its state."""
    rid = f"release {r.release_id}"
    if r.state == "revoked":
        raise PosswarmError(f"{rid}: is revoked (rollout {r.sequence}); revoked stays revoked, publish a new version")
    if action == "activate":
        when = install_window.check_activate(when or "")
        if not stores:
            return replace(r, activate=when, activate_stores=(), format=ROLLOUT_FORMAT)
        kept = tuple(p for p in r.activate_stores if p[0] not in stores)  # the newest word for a store goes first
        return replace(r, activate_stores=tuple((s, when) for s in stores) + kept, format=ROLLOUT_FORMAT)
    if action == "pause":
        if r.state == "paused":
            raise PosswarmError(f"{rid}: is already paused at ring {r.ring} (resume it, or revoke it)")
        return replace(r, state="paused")
    if action == "resume":
        if r.state != "paused":
            raise PosswarmError(f"{rid}: is not paused (it is {r.state} at ring {r.ring}); nothing to resume")
        return replace(r, state="active")
    if action == "revoke":
        return replace(r, state="revoked")
    if action != "promote" or config is None:
        raise ValueError(f"transition {action!r} needs a config" if action == "promote" else f"unknown action {action!r}")
    if r.ring not in config.rings:
        raise PosswarmError(f"{rid}: is at ring {r.ring!r}, which {config.source} does not define "
                            f"(rings: {', '.join(config.rings)}); add it or publish a new version")
    here = config.rings.index(r.ring)
    if to is None:
        to = config.next_ring(r.ring)
        if to is None:
            raise PosswarmError(f"{rid}: is already at the last ring {r.ring} (nothing to promote)")
    elif config.rings.index(config.check_ring(to)) <= here:
        raise PosswarmError(f"{rid}: ring {to} is not after its current ring {r.ring} "
                            f"(a rollout only moves forward: {' -> '.join(config.rings)}; pause or revoke instead)")
    return replace(r, ring=to, rings=config.rings, reached=config.reached(to))


def describe_line(r: Rollout) -> str:
    return f"{r.name} {r.version}: ring {r.ring}, {r.state} (rollout {r.sequence})"


def describe(r: Rollout) -> str:
    """The rollout as a person reads it: ring progress, state, reach, and who signed it when."""
    signed = "unsigned: no rollout.msgpack, its manifest's targets apply" if r.sequence == 0 else (
        f"signed by key {r.key_id} at {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(r.created))}")
    rings = " -> ".join(f"[{x}]" if x == r.ring else x for x in r.rings)
    return "\n".join((
        describe_line(r),
        f"  rings:   {rings}",
        f"  reached: {', '.join(r.reached)}",
        f"  stores:  {', '.join(r.stores)}",
        f"  classes: {', '.join(r.device_classes)}",
        f"  activate: {r.activate}" + "".join(f"; store {p} {w}" for p, w in r.activate_stores),
        f"  {signed}",
    ))
