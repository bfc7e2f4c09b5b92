"""``posswarm-bench distribution``: posswarm vs HTTP from central vs an HTTP store cache, on the emulated network."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import trio

from posswarm import logs
from tools.netsim.cli import run_reporting
from tools.netsim.http_baseline import http_cache, http_central
from tools.netsim.network import emulated_network
from tools.netsim.run import Scenario, ideal_s, rollout
from tools.netsim.topology import plan

PROG = "posswarm-bench distribution"
SYSTEMS = ("posswarm", "http-central", "http-cache")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__)
    p.add_argument("--devices", default="2,4,8", help="comma-separated device counts N per store (default 2,4,8)")
    p.add_argument("--image-mb", type=int, default=64, help="image size in MiB (default 64)")
    p.add_argument("--wan-mbit", type=float, default=40.0, help="the store's WAN rate, both ways (default 40)")
    p.add_argument("--lan-mbit", type=float, default=400.0, help="each LAN port's rate, both ways (default 400)")
    p.add_argument("--deadline", type=float, default=900.0, help="seconds allowed per system and N (default 900)")
    p.add_argument("--json", action="store_true", help="print the rows as a JSON list")
    p.add_argument("--plot", type=Path, help="write a PNG of completion time and WAN bytes against N")
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logs.configure(args.log_level, component="bench")
    try:
        counts = sorted({int(n) for n in args.devices.split(",") if n.strip()})
        if not counts or counts[0] < 1:
            raise ValueError
    except ValueError:
        print(f"{PROG}: --devices {args.devices!r}: give device counts like 2,4,8", file=sys.stderr)
        return 2
    code, rows = run_reporting(lambda workdir: bench(args, counts, workdir), prog=PROG)
    if code:
        return code
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(table(rows, args))
    if args.plot:
        plot(rows, args, args.plot)
    return 0


async def bench(args, counts: list[int], workdir: Path) -> list[dict]:
    """For each N, in one network of 1 store x N devices: posswarm, then the two HTTP baselines."""
    rows = []
    for n in counts:
        # random bytes: the HTTP baselines serve the image as it is; with a real image they must serve it
        # zstd-compressed, as a retailer would publish it, before the figures compare like with like
        scenario = Scenario(1, n, args.image_mb, args.wan_mbit, args.lan_mbit, deadline_s=args.deadline, payload="random")
        topo = plan(1, n, wan_mbit=args.wan_mbit, lan_mbit=args.lan_mbit)
        (workdir / f"n{n}").mkdir()
        async with emulated_network(topo, workdir / f"n{n}") as net:
            async with trio.open_nursery() as swarm:
                swarm_result = await rollout(net, swarm, scenario)
                swarm.cancel_scope.cancel()  # the baselines get the machine to themselves
            image = net.workdir / "payload" / "v1.img"
            async with trio.open_nursery() as http:
                central = await http_central(net, http, image, args.deadline)
                cache = await http_cache(net, http, image, args.deadline)
                http.cancel_scope.cancel()
        size = swarm_result["image_bytes"]
        ideal = ideal_s(size, args.wan_mbit, args.lan_mbit)
        store = swarm_result["stores"][0]
        rows.append(_row("posswarm", n, swarm_result["completion_s"], ideal, swarm_result["wan_amplification"],
                         cache_s=store["cache_installed_s"], learned_s=store["cache_learned_s"]))
        for name, r in (("http-central", central), ("http-cache", cache)):
            wan = max(s["wan_bytes_in"] for s in r["stores"])
            rows.append(_row(name, n, r["completion_s"], ideal, wan / size,
                             cache_s=r["stores"][0].get("cache_installed_s")))
        logs.get("bench").info("bench.done", devices=n, rows=rows[-3:])
    return rows


def _row(system: str, n: int, completion_s: float, ideal: float, amplification: float, *,
         cache_s: float | None = None, learned_s: float = 0.0) -> dict:
    """One table row; cache_s = the store cache done, learned_s = when it knew of the release (HTTP: at once)."""
    return {
        "system": system,
        "devices": n,
        "completion_s": round(completion_s, 2),
        "completion_ratio": round(completion_s / ideal, 3),
        "wan_amplification": round(amplification, 4),
        "cache_s": cache_s,
        "learned_s": learned_s,
    }


def table(rows: list[dict], args) -> str:
    lines = [f"image {args.image_mb} MiB, WAN {args.wan_mbit:g} Mbit/s, LAN {args.lan_mbit:g} Mbit/s, 1 store",
             f"{'system':<13} {'N':>3} {'completion_s':>12} {'ratio':>7} {'WAN / image':>11} {'cache_s':>8} "
             f"{'learned_s':>9}"]
    for r in rows:
        cache = f"{r['cache_s']:.1f}" if r["cache_s"] is not None else "-"
        lines.append(f"{r['system']:<13} {r['devices']:>3} {r['completion_s']:>12.1f} {r['completion_ratio']:>7.2f} "
                     f"{r['wan_amplification']:>11.3f} {cache:>8} {r.get('learned_s', 0.0):>9.1f}")
    return "\n".join(lines)


def plot(rows: list[dict], args, path: Path) -> None:
    try:
        import matplotlib
    except ModuleNotFoundError:
        print(f"{PROG}: --plot needs matplotlib (pip install matplotlib); the table above stands", file=sys.stderr)
        return
    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt

    fig, (time_ax, wan_ax) = plt.subplots(1, 2, figsize=(10, 4))
    styles = {"posswarm": ("o", "-"), "http-central": ("s", "-"), "http-cache": ("^", "--")}  # posswarm and
    for system in SYSTEMS:  # http-cache both sit at 1.0 WAN: the dashes keep both visible
        mine = sorted((r for r in rows if r["system"] == system), key=lambda r: r["devices"])
        n = [r["devices"] for r in mine]
        marker, line = styles[system]
        time_ax.plot(n, [r["completion_s"] for r in mine], marker=marker, linestyle=line, label=system)
        wan_ax.plot(n, [r["wan_amplification"] for r in mine], marker=marker, linestyle=line, label=system)
    ideal = args.image_mb * 2**20 * 8 / (min(args.wan_mbit, args.lan_mbit) * 1e6)
    time_ax.axhline(ideal, color="grey", linestyle=":", label="ideal (image once at WAN rate)")
    time_ax.set(xlabel="devices per store (N)", ylabel="last device done (s)", title="completion time", yscale="log")
    wan_ax.set(xlabel="devices per store (N)", ylabel="WAN bytes / image", title="WAN bytes into the store")
    for ax in (time_ax, wan_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"{args.image_mb} MiB image, WAN {args.wan_mbit:g} Mbit/s, LAN {args.lan_mbit:g} Mbit/s")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"plot written to {path}", file=sys.stderr)
