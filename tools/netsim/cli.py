"""``posswarm-netsim``: run posswarm on an emulated network of stores (run), or remove leftovers (clean)."""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import trio

from posswarm import logs
from posswarm.errors import PosswarmError
from posswarm.service import leaves
from tools import payloads
from tools.netsim import netns
from tools.netsim.proc_usage import light_line
from tools.netsim.run import Scenario, run
from tools.netsim.topology import PREFIX

PROG = "posswarm-netsim"
TIMED_OUT = "a deadline passed before every device had the image (posswarm-netsim run --keep keeps the logs)"


class Terminated(Exception):
    """SIGTERM arrived: unwind like Ctrl-C, so every process and namespace is removed."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Emulate stores with network namespaces and measure posswarm.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="build the network, publish an image, wait for every device, report")
    r.add_argument("--stores", type=int, default=1, help="stores, each a router + cache + devices (default 1)")
    r.add_argument("--devices", type=int, default=3, help="devices per store (default 3)")
    r.add_argument("--image-mb", type=int, default=64, help="image size in MiB (default 64)")
    r.add_argument("--payload", default="real", choices=payloads.KINDS,
                   help="real: an ext4 image of this machine's files, and its next build after a package "
                        "upgrade (default); random: incompressible bytes, the worst case")
    r.add_argument("--wan-mbit", type=float, default=40.0, help="each store's WAN rate, both ways (default 40)")
    r.add_argument("--lan-mbit", type=float, default=400.0, help="each LAN port's rate, both ways (default 400)")
    r.add_argument("--update-percent", type=float, default=None,
                   help="then publish an update and measure it too: with --payload random, this %% of the bytes "
                        "changed; with a real image, its next build (the percent only switches the update on)")
    r.add_argument("--cross-store", action="store_true",
                   help="caches may seed each other (tracker --cross-store) and central super-seeds (BEP 16)")
    r.add_argument("--wan-cap-kbps", type=int, default=0,
                   help="give every cache an all-day WAN window capping it at this rate (default: none)")
    r.add_argument("--central-failover", action="store_true",
                   help="central as two trackers on one Redis and two seeders on one releases directory and one "
                        "PostgreSQL behind HAProxy; one of each is SIGKILLed when the caches hold half the image, "
                        "while every till sells and the dashboard is polled")
    r.add_argument("--deadline", type=float, default=600.0, help="seconds to wait for every device (default 600)")
    r.add_argument("--json", action="store_true", help="print one JSON object")
    r.add_argument("--keep", action="store_true", help="keep the work directory (logs, configs, data)")
    r.add_argument("--prefix", default=PREFIX,
                   help=f"namespace names start with this (default {PREFIX}); another one runs beside other runs")
    r.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    c = sub.add_parser("clean", help=f"remove namespaces named {PREFIX}* and the processes in them")
    c.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logs.configure(args.log_level, component="netsim")
    try:
        if args.command == "clean":
            removed = netns.clean(PREFIX)
            print(f"removed {len(removed)} namespace(s)" + (f": {' '.join(removed)}" if removed else ""))
            return 0
        if args.image_mb < 1:
            raise PosswarmError(f"--image-mb {args.image_mb}: the image must be at least 1 MiB")
        if args.update_percent is not None and not 0 < args.update_percent <= 100:
            raise PosswarmError(f"--update-percent {args.update_percent}: choose more than 0 and at most 100")
        scenario = Scenario(stores=args.stores, devices=args.devices, image_mb=args.image_mb, wan_mbit=args.wan_mbit,
                            lan_mbit=args.lan_mbit, update_percent=args.update_percent, cross_store=args.cross_store,
                            wan_cap_kbps=args.wan_cap_kbps, deadline_s=args.deadline,
                            payload=payloads.check_kind(args.payload), central_failover=args.central_failover,
                            prefix=args.prefix)
    except PosswarmError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # during clean
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    code, result = run_reporting(lambda workdir: run(scenario, workdir), prog=PROG, keep=args.keep)
    if code:
        return code
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(describe(result))
    return 0


def run_reporting(start, *, prog: str, keep: bool = False) -> tuple[int, object]:
    """(0, what ``run_with_workdir`` returned), or the exit code after one line on stderr: 1 for a
    PosswarmError, 130 for Ctrl-C or SIGTERM (everything was torn down either way)."""
    try:
        return 0, run_with_workdir(start, keep=keep)
    except PosswarmError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1, None
    except (KeyboardInterrupt, Terminated):
        print(f"{prog}: interrupted; every process and namespace was removed", file=sys.stderr)
        return 130, None


def run_with_workdir(start, *, keep: bool = False):
    """``trio.run(start(workdir))`` in a fresh temp dir, removed afterwards; SIGTERM unwinds like Ctrl-C."""
    workdir = Path(tempfile.mkdtemp(prefix="posswarm-netsim-"))
    try:
        return trio.run(_until_terminated, start, workdir)
    except BaseExceptionGroup as group:
        # a nursery wraps the one error that matters; show it as itself
        found = list(leaves(group))
        # (an interruption first: the processes it stopped may have raised errors of their own)
        for kinds in ((Terminated, KeyboardInterrupt), (PosswarmError,), (trio.TooSlowError,)):
            first = next((e for e in found if isinstance(e, kinds)), None)
            if isinstance(first, trio.TooSlowError):
                raise PosswarmError(TIMED_OUT) from None
            if first is not None:
                raise first from None
        raise
    except trio.TooSlowError:
        raise PosswarmError(TIMED_OUT) from None
    finally:
        if keep:
            print(f"{PROG}: work directory kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


async def _until_terminated(start, workdir: Path):
    result = None

    async def body(nursery: trio.Nursery) -> None:
        nonlocal result
        result = await start(workdir)
        nursery.cancel_scope.cancel()

    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(body, nursery)
            async for _ in signals:
                raise Terminated()
    return result


def describe(result: dict) -> str:
    """The result as a few readable lines."""
    size = result["stored_bytes"]  # every "x image" below is against what the wire must carry at least once
    lines = [f"image {result['image_bytes'] / 2**20:.0f} MiB ({result['payload']}; {size / 2**20:.1f} MiB stored), "
             f"WAN {result['wan_mbit']:g} Mbit/s, LAN {result['lan_mbit']:g} Mbit/s"]
    for s in result["stores"]:
        devices = ", ".join(f"{d['installed_s']:.1f}" for d in s["devices"])
        lines.append(f"  store {s['store']}: WAN in {s['wan_bytes_in'] / size:.3f} x image "
                     f"(posswarm says {s['posswarm_wan_bytes'] / size:.3f}, off {s['accounting_off_percent']}%); "
                     f"cache {s['cache_installed_s']:.1f} s; devices {devices} s")
        if s.get("wan_timeline"):
            w = s["wan_timeline"]
            lines.append(f"    WAN fetch: first byte {w['first_byte_s']:.2f} s, last {w['last_byte_s']:.2f} s after "
                         f"publish, {w['fetch_kbps'] / 1000:.1f} Mbit/s of payload between them")
    lines.append(f"WAN amplification {result['wan_amplification']:.3f}; completion {result['completion_s']:.1f} s "
                 f"vs ideal {result['ideal_s']:.1f} s (ratio {result['completion_ratio']:.2f}); "
                 f"central uploaded {result['central_upload_bytes'] / size:.2f} x image")
    if result.get("light_nodes"):
        lines.append(light_line(result["light_nodes"]))
    lines.append("posswarm's WAN accounting agrees with the routers' counters within 2 %"
                 if result["wan_accounting_agrees"] else
                 "posswarm's WAN accounting does NOT agree with the routers' counters within 2 %")
    if result.get("central_failover"):
        f = result["central_failover"]
        lines.append(f"central failover: {f['killed']} SIGKILLed at {f['killed_at_percent']:.0f} % of the caches' bytes; "
                     f"longest stall after it {f['stalled_s']} s")
    if result.get("sales"):
        v = result["sales"]
        lines.append(f"sales: {v['acknowledged']} answered at the tills ({v['rung_after_kill']} after the kill), "
                     f"lost {v['lost']}, duplicated {v['duplicated']}, phantom {v['phantom']}, wrong total "
                     f"{v['wrong_total']}; to central p50 {v['to_central_p50_ms']} ms, p99 {v['to_central_p99_ms']} ms")
    if result.get("dashboard"):
        d = result["dashboard"]
        lines.append(f"dashboard: {d['answered_200']} of {d['polls']} polls answered 200 "
                     f"({d['after_kill_200']} after the kill); longest gap {d['longest_gap_s']} s "
                     f"(before the kill {d['longest_gap_before_kill_s']} s)")
    if "update" in result:
        u = result["update"]
        lines.append(f"update ({u['percent']:g} % changed, {u['changed_bytes']:,} B): WAN in {u['wan_bytes_in']:,} B "
                     f"= {u['wan_per_changed_byte']:.2f} x changed; completion {u['completion_s']:.1f} s")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
