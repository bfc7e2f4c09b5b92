"""The ``posswarm`` command: run a node, verify a release, show a node's status, apply a node's privileged
activations, run the demo."""

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

    rb = sub.add_parser("rollback", help="switch a release back to the previous version and hold the current one")
    rb.add_argument("release", nargs="?", help="release name (default: the only one installed)")
    where = rb.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", help="the node's TOML file")
    where.add_argument("--data-dir", help="the node's data directory")

    act = sub.add_parser("activate-pending", help="as root: answer the node's privileged activation requests "
                         "(run by posswarm-activate.service; see docs/deployment.md)")
    act.add_argument("--config", required=True, help="the node's TOML file (install.privileged_hook)")
    act.add_argument("--work-dir", default="/var/lib/posswarm-activate",
                     help="root's own directory for the verified copy a hook runs on (default: %(default)s)")

    demo = sub.add_parser("demo", help="a whole store on this machine: tracker, seeder, cache and devices")
    demo.add_argument("--devices", type=int, default=4)
    demo.add_argument("--image-mb", type=int, default=64)
    demo.add_argument("--payload", default="real", choices=("real", "random"),
                      help="real: an ext4 image of this machine's own files, as a POS image is (default); "
                           "random: incompressible bytes, the worst case")
    demo.add_argument("--json", action="store_true", help="one JSON object on stdout; progress on stderr")
    demo.add_argument("--timeout", type=float, default=300.0, help="give up after this many seconds")
    demo.add_argument("--keep", action="store_true", help="keep the demo's temp directory (logs, data dirs)")
    demo.add_argument("--slots", action="store_true", help="the image goes into each till's A/B boot slots (loop "
                      "devices as root), which reboot into it once on trial and confirm it, then take the next "
                      "version by the delta from the slot (docs/slots.md)")

    from posswarm import enrol_cmd
    from posswarm.storedata import commands as store_data_commands

    enrol_cmd.add_command(sub)
    store_data_commands.add_commands(sub)
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
        if args.command == "rollback":
            return _rollback(args)
        if args.command == "activate-pending":
            return _activate_pending(args)
        if args.command == "demo":
            from tools.demo import demo_main

            return demo_main(args)
        if args.command == "enroll":
            from posswarm.enrol_cmd import enroll_main

            return enroll_main(args)
        if args.command in ("sale", "sku"):
            from posswarm.storedata import commands as store_data_commands

            return store_data_commands.run(args)
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


def _activate_pending(args) -> int:
    from posswarm import config as node_config
    from posswarm import privileged

    config = node_config.load(Path(args.config))
    logs.configure(config.log_level, component="activate")
    privileged.activate_pending(config, Path(args.work_dir))
    return 0


def _data_dir(args):
    from posswarm import config as node_config
    from posswarm.datadir import DataDir

    return DataDir(node_config.load(Path(args.config)).data_dir if args.config else Path(args.data_dir))


def _rollback(args) -> int:
    from posswarm import install

    data = _data_dir(args)
    installed = sorted(p.name for p in (data.root / "installed").glob("*") if (p / "current").is_symlink())
    if args.release is None:
        if len(installed) != 1:
            raise PosswarmError(f"rollback: name the release to roll back (installed: {', '.join(installed) or 'none'})")
        args.release = installed[0]
    if args.release not in installed:
        raise PosswarmError(f"rollback: release {args.release!r} is not installed here "
                            f"(installed: {', '.join(installed) or 'none'})")
    rolled_from, rolled_to = install.rollback(data.installed(args.release))
    print(f"{args.release}: rolled back from {rolled_from} to {rolled_to}; {rolled_from} is held "
          "(the node will not install it again; a newer version supersedes it)")
    return 0


def _status(args) -> int:
    from posswarm import status

    doc = status.read(_data_dir(args).status_file)
    if args.json:
        print(json.dumps(doc, indent=1, sort_keys=True))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]{doc['node']}[/] {doc['role']} of store {doc['store']} at {doc['address']} "
                  f"(peers: {len(doc['peers'])})")
    if doc.get("revoked"):
        console.print(f"[red]revoked[/] {doc['revoked']}; no longer speaking for the store")
    table = Table("release", "state", "progress", "from WAN", "from LAN", "error")
    for r in doc["releases"]:
        table.add_row(f"{r['name']} {r['version']}", r["state"], f"{r['percent']:.1f} %",
                      _mb(r["bytes_from_wan"]), _mb(r["bytes_from_lan"]), r["error"] or "")
    console.print(table)
    for name, v in doc["installed"].items():
        console.print(f"{name}: current {v['current'] or '-'}, previous {v['previous'] or '-'}")
    if slots := doc.get("slots"):
        console.print(f"boot slot {slots['booted']}: {slots['name'] or '-'} {slots['version'] or '-'}, {slots['boot']}"
                      + (f" ({slots['reason']})" if slots["reason"] else "")
                      + (f"; slot {slots['trial']} waits for its trial boot" if slots["trial"] else ""))
    for key, reason in doc.get("rejected", {}).items():
        console.print(f"[red]refused[/] {key}: {reason}")
    central = doc.get("central_state") or {}
    if central:
        versions = ", ".join(f"{role} {v}" for role, v in sorted(central.get("versions", {}).items()))
        console.print(f"central's signed state: {'fresh' if central.get('fresh') else '[red]not fresh[/]'}"
                      + (f" ({central['why_not']})" if central.get("why_not") else "") + (f"; {versions}" if versions else ""))
    for what in ("catalog", "tracker"):
        seen = doc[what].get("last_ok")
        ago = f"{doc['updated'] - seen:.0f} s ago" if seen else "never"
        console.print(f"last contact with the {'cache' if what == 'catalog' and doc['role'] == 'device' else what}: "
                      f"{ago}" + (f" ({doc[what]['error']})" if doc[what].get("error") else ""))
    return 0


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


if __name__ == "__main__":
    sys.exit(main())
