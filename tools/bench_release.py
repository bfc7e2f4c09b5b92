"""``posswarm-bench release``: the release-management targets on the emulated network of stores.

Three measurements, each its own run of posswarm-netsim's scenario (real processes in namespaces), on a
real ext4 image (``--payload real``, the default) or random bytes (``--payload random``, the worst case):

- delta:       one store fetches version 1, then an update; the store's WAN bytes for the update
               against the bytes that changed (target <= 1.3 x). Real: the image's next build after a
               package upgrade (changed = the content of the files it edited or added; the build also
               moves files, which renews the chunks around them). Random: 5 % of the bytes rewritten
               in 3 regions, each also renewing the chunks it starts and ends in.
- cross-store: K stores fetch one image, once with caches seeding each other (tracker --cross-store,
               seeder --super-seed) and once without; what central uploaded against the image
               (target <= 1.5 x with, about K x without).
- wan-cap:     one store's cache with an all-day WAN window on a faster link; the rate on the WAN
               link while the download runs at full speed (target: within 5 % of the cap).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from posswarm import logs
from tools import payloads
from tools.netsim.cli import run_reporting
from tools.netsim.run import Scenario, run

PROG = "posswarm-bench release"
MEASUREMENTS = ("delta", "cross-store", "wan-cap")
UPDATE_PERCENT = 5.0
TARGET_DELTA = 1.3  # WAN bytes per changed byte
TARGET_CROSS_STORE = 1.5  # central upload per image with cross-store seeding
TARGET_CAP_OFF = 5.0  # percent


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", action="append", choices=MEASUREMENTS,
                   help="run just this measurement (repeatable; default: all three)")
    p.add_argument("--stores", type=int, default=8, help="stores K for cross-store (default 8)")
    p.add_argument("--image-mb", type=int, default=32, help="image size in MiB for cross-store and wan-cap "
                                                             "(default 32)")
    p.add_argument("--delta-image-mb", type=int, default=256, help="image size in MiB for delta (default 256)")
    p.add_argument("--wan-mbit", type=float, default=40.0, help="each store's WAN rate for delta and cross-store "
                                                                 "(default 40)")
    p.add_argument("--lan-mbit", type=float, default=400.0, help="each LAN port's rate (default 400)")
    p.add_argument("--cap-kbps", type=int, default=16_000, help="the WAN window's cap for wan-cap (default 16000)")
    p.add_argument("--cap-link-mbit", type=float, default=200.0,
                   help="the WAN link under the cap, faster than it (default 200)")
    p.add_argument("--payload", default="real", choices=payloads.KINDS,
                   help="real: an ext4 image of this machine's files and its next build after a package upgrade "
                        "(default); random: incompressible bytes, the update rewriting 5 %% in 3 regions")
    p.add_argument("--deadline", type=float, default=600.0, help="seconds allowed per run (default 600)")
    p.add_argument("--json", action="store_true", help="print the rows as a JSON list")
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    return p


def scenarios(args) -> list[tuple[str, Scenario]]:
    """The runs to make, in order, each named by what it measures."""
    wanted = args.only or list(MEASUREMENTS)
    common = dict(lan_mbit=args.lan_mbit, deadline_s=args.deadline, payload=args.payload)
    runs = []
    if "delta" in wanted:
        runs.append(("delta", Scenario(stores=1, devices=2, image_mb=args.delta_image_mb, wan_mbit=args.wan_mbit,
                                       update_percent=UPDATE_PERCENT, **common)))
    common["image_mb"] = args.image_mb
    if "cross-store" in wanted:
        for cross in (True, False):
            runs.append(("cross-store" if cross else "no-cross-store",
                         Scenario(stores=args.stores, devices=1, wan_mbit=args.wan_mbit, cross_store=cross, **common)))
    if "wan-cap" in wanted:
        runs.append(("wan-cap", Scenario(stores=1, devices=1, wan_mbit=args.cap_link_mbit, wan_cap_kbps=args.cap_kbps,
                                         **common)))
    return runs


def row(name: str, scenario: Scenario, result: dict) -> dict:
    """What one run measured against its target."""
    base = {"measurement": name, "stores": scenario.stores, "image_bytes": result["image_bytes"],
            "completion_s": result["completion_s"]}
    if name == "delta":
        update = result["update"]
        return base | {"measured": update["wan_per_changed_byte"], "unit": "WAN bytes per changed byte",
                       "target": f"<= {TARGET_DELTA}", "met": update["wan_per_changed_byte"] <= TARGET_DELTA,
                       "changed_bytes": update["changed_bytes"], "wan_bytes": update["wan_bytes_in"],
                       "completion_s": update["completion_s"]}
    if name in ("cross-store", "no-cross-store"):
        per_image = result["central_upload_per_image"]
        with_cross = name == "cross-store"
        return base | {"measured": per_image, "unit": "central upload per image",
                       "target": f"<= {TARGET_CROSS_STORE}" if with_cross else f"about {scenario.stores}",
                       "met": per_image <= TARGET_CROSS_STORE if with_cross else None,
                       "central_upload_bytes": result["central_upload_bytes"]}
    cap = result["wan_cap"]
    off = cap.get("worst_off_percent")
    return base | {"measured": off, "unit": "% off the cap (wire, steady)", "target": f"<= {TARGET_CAP_OFF}",
                   "met": off is not None and off <= TARGET_CAP_OFF, "cap_kbps": cap["kbps"],
                   "wire_kbps": cap.get("wire_kbps"), "payload_kbps": cap.get("payload_kbps")}


async def bench(args, workdir: Path) -> list[dict]:
    rows = []
    for name, scenario in scenarios(args):
        (workdir / name).mkdir()
        result = await run(scenario, workdir / name)
        rows.append(row(name, scenario, result))
        logs.get("bench").info("bench.done", measurement=name, measured=rows[-1]["measured"])
    return rows


def table(rows: list[dict]) -> str:
    lines = [f"{'measurement':<15} {'stores':>6} {'measured':>9} {'unit':<30} {'target':<9} {'met':<4} "
             f"{'completion_s':>12}"]
    for r in rows:
        met = {True: "yes", False: "NO", None: "-"}[r["met"]]
        lines.append(f"{r['measurement']:<15} {r['stores']:>6} {r['measured']!s:>9} {r['unit']:<30} "
                     f"{r['target']:<9} {met:<4} {r['completion_s']:>12.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logs.configure(args.log_level, component="bench")
    for flag, value, low in (("--stores", args.stores, 2), ("--image-mb", args.image_mb, 4),
                             ("--delta-image-mb", args.delta_image_mb, 4)):
        if value < low:
            print(f"{PROG}: {flag} {value}: use at least {low}", file=sys.stderr)
            return 2
    if args.cap_kbps * 1.2 > args.cap_link_mbit * 1000:
        print(f"{PROG}: --cap-kbps {args.cap_kbps} needs a faster --cap-link-mbit than {args.cap_link_mbit:g} "
              f"(the link must not be what holds the rate down)", file=sys.stderr)
        return 2
    code, rows = run_reporting(lambda workdir: bench(args, workdir), prog=PROG)
    if code:
        return code
    print(json.dumps(rows, indent=1) if args.json else table(rows))
    return 0
