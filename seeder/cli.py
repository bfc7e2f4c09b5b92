"""`posswarm-seeder`: keygen, publish and serve at central."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from posswarm import logs
from posswarm.errors import PosswarmError
from posswarm.keys import generate_keypair, key_id, load_private_key
from posswarm.manifest import Targets

PROG = "posswarm-seeder"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Publish and seed signed posswarm releases from central IT.")
    p.add_argument("--log-level", default=None, choices=["debug", "info", "warning", "error"],
                   help="stderr log level (default: info for serve, warning otherwise)")
    sub = p.add_subparsers(dest="command", required=True)

    k = sub.add_parser("keygen", help="create central.key / central.pub")
    k.add_argument("--out", required=True, type=Path, help="directory for the key pair")

    pub = sub.add_parser("publish", help="publish a file (image) or directory (app) as a signed release")
    pub.add_argument("path", type=Path, help="payload file or directory")
    pub.add_argument("--name", required=True, help="release name, e.g. pos-os")
    pub.add_argument("--version", required=True, help="release version, e.g. 2026.11")
    pub.add_argument("--key", required=True, type=Path, help="central.key (Ed25519 PEM)")
    pub.add_argument("--out", required=True, type=Path, help="releases directory")
    pub.add_argument("--store", action="append", default=[], help="target store id (repeatable; default all)")
    pub.add_argument("--class", dest="classes", action="append", default=[], help="target device class (repeatable; default all)")
    pub.add_argument("--ring", default="all", help="rollout ring (default: all)")
    pub.add_argument("--piece-kib", type=int, default=256, help="torrent piece size in KiB (default: 256)")

    s = sub.add_parser("serve", help="seed releases and serve the catalog")
    s.add_argument("--releases", required=True, type=Path, help="releases directory")
    s.add_argument("--listen", default="0.0.0.0:8080", help="HTTP HOST:PORT (default: 0.0.0.0:8080)")
    s.add_argument("--bt-listen", default="0.0.0.0:6881", help="BitTorrent HOST:PORT (default: 0.0.0.0:6881)")
    s.add_argument("--key-pub", required=True, type=Path, help="central.pub, to check releases before seeding them")
    s.add_argument("--tracker", default="", help="tracker announce URL (default: none)")
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
    targets = Targets(
        stores=tuple(args.store) or ("*",), device_classes=tuple(args.classes) or ("*",), ring=args.ring
    )
    if not 16 <= args.piece_kib <= 1 << 20:
        raise PosswarmError(f"--piece-kib {args.piece_kib}: out of range (use a power of two from 16 to 16384)")
    kwargs = dict(
        name=args.name, version=args.version, private_key=key, out=args.out,
        targets=targets, piece_size=args.piece_kib * 1024,
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
    m = result.manifest
    mb = m.total_size / 1e6
    rate = mb / result.seconds if result.seconds > 0 else 0.0
    print(
        f"published {m.release_id}: {mb:.1f} MB, {len(m.unique_chunks())} chunks ({result.chunks_new} new), "
        f"{result.seconds:.2f} s, {rate:.0f} MB/s -> {result.path}"
    )
    return 0


def _serve(args) -> int:
    if importlib.util.find_spec("seeder.server") is None:
        raise PosswarmError("serve: this build has no seeder.server (install the full posswarm package)")
    from seeder.server import serve_main

    return serve_main(args)


_COMMANDS = {"keygen": _keygen, "publish": _publish, "serve": _serve}


if __name__ == "__main__":
    sys.exit(main())
