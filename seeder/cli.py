"""`posswarm-seeder`: keys, publish and serve at central."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from posswarm import logs
from posswarm.errors import PosswarmError
from posswarm.keys import generate_keypair, key_id, load_private_key
from seeder import enrolment_cli, keys_cli, rollout_cli

PROG = "posswarm-seeder"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Publish and seed signed posswarm releases from central IT.")
    p.add_argument("--log-level", default=None, choices=["debug", "info", "warning", "error"],
                   help="stderr log level (default: info for serve, warning otherwise)")
    sub = p.add_subparsers(dest="command", required=True)

    keys_cli.add_command(sub)
    enrolment_cli.add_command(sub)
    k = sub.add_parser("keygen", help="create a lone central.key / central.pub (prefer `keys init`: roles and rotation)")
    k.add_argument("--out", required=True, type=Path, help="directory for the key pair")

    pub = sub.add_parser("publish", help="publish a file (image) or directory (app) as a signed release")
    pub.add_argument("path", type=Path, help="payload file or directory")
    pub.add_argument("--name", required=True, help="release name, e.g. pos-os")
    pub.add_argument("--version", required=True, help="release version, e.g. 2026.11")
    pub.add_argument("--key", required=True, type=Path, help="the release signing key: KEYS/targets.key from `keys init`")
    add_snapshot_key(pub)
    pub.add_argument("--out", required=True, type=Path, help="releases directory")
    pub.add_argument("--store", action="append", default=[], help="target store id (repeatable; default all)")
    pub.add_argument("--class", dest="classes", action="append", default=[], help="target device class (repeatable; default all)")
    pub.add_argument("--ring", default=None, help="rollout ring (default: the first ring of rollouts.toml, else all)")
    rollout_cli.add_publish_options(pub)
    pub.add_argument("--piece-kib", type=int, default=256, help="torrent piece size in KiB (default: 256)")

    s = sub.add_parser("serve", help="seed releases and serve the catalog")
    s.add_argument("--releases", required=True, type=Path, help="releases directory")
    s.add_argument("--listen", default="0.0.0.0:8080", help="HTTPS HOST:PORT (default: 0.0.0.0:8080)")
    s.add_argument("--tls-cert", type=Path, default=None,
                   help="central's TLS certificate chain (KEYS/tls.crt from `keys tls`, or your PKI's)")
    s.add_argument("--tls-key", type=Path, default=None, help="its private key (KEYS/tls.key)")
    s.add_argument("--plain-http", action="store_true",
                   help="serve plain HTTP: only behind a TLS-terminating proxy on the same host")
    s.add_argument("--bt-listen", default="0.0.0.0:6881", help="BitTorrent HOST:PORT (default: 0.0.0.0:6881)")
    s.add_argument("--key-pub", type=Path, default=None,
                   help="central.pub, only for a RELEASES without a TUF repository (`keys init` makes one)")
    s.add_argument("--timestamp-key", type=Path, default=None,
                   help="the online timestamp key (KEYS/timestamp.key): renews central's signed timestamp")
    s.add_argument("--sku-key", type=Path, default=None,
                   help="the SKU role key (KEYS/sku.key): signs every SKU entry; nodes apply only signed ones")
    s.add_argument("--timestamp-expiry-s", type=float, default=86400.0,
                   help="life of each signed timestamp; nodes start no new installs once it lapses (default: 1 day)")
    s.add_argument("--enrolment-key", type=Path, default=None,
                   help="KEYS/enrolment.key (enrolment-ca.crt beside it): issue credentials to nodes presenting a "
                        "one-time token from `enroll-token` at POST /enroll (default: none issued)")
    s.add_argument("--operator-token-file", type=Path, default=None,
                   help="file holding the operator bearer token that /sales/totals and /sales/stream require "
                        "(default: none, and those endpoints refuse everyone)")
    s.add_argument("--tracker", default="", help="tracker announce URL (default: none)")
    s.add_argument("--tracker-ca", type=Path, default=None,
                   help="CA an https:// tracker's certificate chains to (e.g. KEYS/enrolment-ca.crt; default: the "
                        "system's)")
    s.add_argument("--super-seed", action="store_true",
                   help="BEP 16: give each piece to one cache until others have it, so stores that may seed each "
                        "other (tracker --cross-store) take about one copy from central in all; costs a slower "
                        "start (libtorrent 2.1 offers each cache its first piece ~11 s after it connects)")
    s.add_argument("--web-seed", action="append", metavar="URL",
                   help="BEP 19 web seed base for caches, repeatable: 'self' (this seeder's HTTP) or a CDN/object "
                        "store URL holding a copy of RELEASES (default: none)")
    s.add_argument("--data-dir", type=Path, default=None,
                   help="sales and SKU catalog files (default: RELEASES/../central-data)")
    s.add_argument("--sales-db", default="", help="sales store: SQLite path or postgresql://... (default: DATA_DIR/sales.sqlite)")
    s.add_argument("--sku-db", default="",
                   help="SKU catalog: SQLite path or postgresql://..., the one every seeder behind a load balancer "
                        "shares (default: DATA_DIR/sku.sqlite)")

    from seeder import sales_cli, sku_cli

    sales_cli.add_command(sub)
    sku_cli.add_command(sub)
    rollout_cli.add_command(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)  # exits 2 with a usage line on bad arguments
    logs.configure(args.log_level or ("info" if args.command == "serve" else "warning"), component="seeder")
    try:
        return _COMMANDS[args.command](args)
    except PosswarmError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


def _keygen(args) -> int:
    priv, pub = generate_keypair(args.out)
    print(f"wrote {priv} and {pub} (key id {key_id(load_private_key(priv).public_key())})")
    return 0


def _publish(args) -> int:
    from seeder.publish import publish_release  # libtorrent loads only for the commands that need it

    key = load_private_key(args.key)
    targets, first_rollout = rollout_cli.publish_plan(args, key)  # rollouts.toml: groups, first ring
    if not 16 <= args.piece_kib <= 1 << 20:
        raise PosswarmError(f"--piece-kib {args.piece_kib}: out of range (use a power of two from 16 to 16384)")
    kwargs = dict(
        name=args.name, version=args.version, private_key=key, out=args.out,
        targets=targets, piece_size=args.piece_kib * 1024, rollout_for=first_rollout,
    )
    if sys.stderr.isatty():
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

        columns = (BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
        with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task("publish", total=None)
            result = publish_release(args.path, progress=lambda d, t: bar.update(task, completed=d, total=t), **kwargs)
    else:
        result = publish_release(args.path, **kwargs)
    update_signed_state(args.out, key, args.snapshot_key, key_path=args.key)
    m = result.manifest
    mb = m.total_size / 1e6
    rate = mb / result.seconds if result.seconds > 0 else 0.0
    print(
        f"published {m.release_id}: {mb:.1f} MB, {len(m.unique_chunks())} chunks ({result.chunks_new} new), "
        f"{result.seconds:.2f} s, {rate:.0f} MB/s -> {result.path}"
    )
    if first_rollout is not None:
        print(f"rollout: ring {m.targets.ring}, active (rollout 1); promote with `{PROG} release promote {m.name} {m.version}`")
    return 0


def add_snapshot_key(parser) -> None:
    parser.add_argument("--snapshot-key", type=Path, default=None,
                        help="the snapshot key (default: snapshot.key beside --key)")


def update_signed_state(releases: Path, targets_key, snapshot_key_path: Path | None, *, key_path: Path | None = None) -> None:
    """Re-list RELEASES in central's signed targets and snapshot (the running seeder renews the timestamp)."""
    from seeder.tuf_repository import Repository

    repo = Repository(releases)
    if not repo.exists():
        print(f"{PROG}: warning: {releases} has no TUF repository; nodes take nothing from it until "
              f"`{PROG} keys init --releases {releases}` makes one", file=sys.stderr)
        return
    path = snapshot_key_path or (key_path or Path("targets.key")).with_name("snapshot.key")
    version = repo.update_targets(targets_key, load_private_key(path))
    print(f"signed targets version {version}")


def _serve(args) -> int:
    if importlib.util.find_spec("seeder.server") is None:
        raise PosswarmError("serve: this build has no seeder.server (install the full posswarm package)")
    from seeder.server import serve_main

    return serve_main(args)


def _sales(args) -> int:
    from seeder import sales_cli

    return sales_cli.run(args)


def _sku(args) -> int:
    from seeder import sku_cli

    return sku_cli.run(args)


_COMMANDS = {"keys": keys_cli.run, "enroll": enrolment_cli.run_enroll, "enroll-token": enrolment_cli.run_token,
             "enroll-revoke": enrolment_cli.run_revoke, "enroll-revoked": enrolment_cli.run_revoked,
             "keygen": _keygen, "publish": _publish, "serve": _serve, "sales": _sales, "sku": _sku,
             "release": rollout_cli.run}


if __name__ == "__main__":
    sys.exit(main())
