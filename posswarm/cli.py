"""The ``posswarm`` command: run a node, verify a release, show a node's status, run the demo."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from posswarm import logs
from posswarm.errors import PosswarmError

PROG = "posswarm"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    node = sub.add_parser("node", help="run a store cache or a device (started at boot)")
    node.add_argument("--config", required=True, help="the node's TOML file (see docs/configuration.md)")
    node.add_argument("--check-config", action="store_true", help="only check the config and exit")

    verify = sub.add_parser("verify", help="check a release directory against the central public key")
    verify.add_argument("release_dir")
    verify.add_argument("--pubkey", required=True, help="central.pub")

    st = sub.add_parser("status", help="what a running node says about itself")
    where = st.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", help="the node's TOML file")
    where.add_argument("--data-dir", help="the node's data directory")
    st.add_argument("--json", action="store_true")

    demo = sub.add_parser("demo", help="a whole store on this machine: tracker, seeder, cache and devices")
    demo.add_argument("--devices", type=int, default=4)
    demo.add_argument("--image-mb", type=int, default=64)
    demo.add_argument("--json", action="store_true", help="one JSON object on stdout; progress on stderr")
    demo.add_argument("--timeout", type=float, default=300.0, help="give up after this many seconds")
    demo.add_argument("--keep", action="store_true", help="keep the demo's temp directory (logs, data dirs)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "node":
            return _node(args)
        if args.command == "verify":
            from posswarm.verify_cmd import verify_main

            return verify_main(args.release_dir, args.pubkey)
        if args.command == "status":
            return _status(args)
        if args.command == "demo":
            from posswarm.demo import demo_main

            return demo_main(args)
    except PosswarmError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    return 2


def _node(args) -> int:
    from posswarm import config as node_config

    config = node_config.load(Path(args.config))
    if args.check_config:
        print(f"ok: {args.config} ({config.role} {config.node_id} of store {config.store})")
        return 0
    logs.configure(config.log_level, component="node")
    from posswarm.node import Node
    from posswarm.service import run_until_signalled

    return run_until_signalled(Node(config).run, program=PROG)


def _status(args) -> int:
    from posswarm import config as node_config
    from posswarm import status
    from posswarm.datadir import DataDir

    data_dir = node_config.load(Path(args.config)).data_dir if args.config else Path(args.data_dir)
    doc = status.read(DataDir(data_dir).status_file)
    if args.json:
        print(json.dumps(doc, indent=1, sort_keys=True))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]{doc['node']}[/] {doc['role']} of store {doc['store']} at {doc['address']} "
                  f"(peers: {len(doc['peers'])})")
    table = Table("release", "state", "progress", "from WAN", "from LAN", "error")
    for r in doc["releases"]:
        table.add_row(f"{r['name']} {r['version']}", r["state"], f"{r['percent']:.1f} %",
                      _mb(r["bytes_from_wan"]), _mb(r["bytes_from_lan"]), r["error"] or "")
    console.print(table)
    for name, v in doc["installed"].items():
        console.print(f"{name}: current {v['current'] or '-'}, previous {v['previous'] or '-'}")
    return 0


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


if __name__ == "__main__":
    sys.exit(main())
