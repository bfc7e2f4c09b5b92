"""``posswarm-bench distribution``: posswarm vs Varnish in the store, an HTTP store cache and HTTP from central.

All on the same emulated network, one after the other, with the same image: a real ext4 image by
default (the HTTP systems serve it zstd-compressed, as a retailer would publish it, and the tills
decompress it to disk), or random bytes, the incompressible worst case (``--payload random``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import trio

from posswarm import logs
from posswarm.errors import PosswarmError
from tools import payloads
from tools.netsim.cli import run_reporting
from tools.netsim.http_baseline import compress, http_cache, http_central
from tools.netsim.network import emulated_network
from tools.netsim.proc_usage import light_line
from tools.netsim.run import Scenario, ideal_s, rollout
from tools.netsim.topology import PREFIX, plan
from tools.netsim.varnish import check_installed, varnish_cache

PROG = "posswarm-bench distribution"
SYSTEMS = ("posswarm", "varnish", "http-cache", "http-central")
BASELINES = {"varnish": varnish_cache, "http-cache": http_cache, "http-central": http_central}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__)
    p.add_argument("--devices", default="2,4,8", help="comma-separated device counts N per store (default 2,4,8)")
    p.add_argument("--image-mb", type=int, default=64, help="image size in MiB (default 64)")
    p.add_argument("--payload", default="real", choices=payloads.KINDS,
                   help="real: an ext4 image of this machine's files (default); random: incompressible bytes")
    p.add_argument("--systems", default=",".join(SYSTEMS),
                   help=f"comma-separated, from {', '.join(SYSTEMS)} (default all; posswarm always runs)")
    p.add_argument("--wan-mbit", type=float, default=40.0, help="the store's WAN rate, both ways (default 40)")
    p.add_argument("--lan-mbit", type=float, default=400.0, help="each LAN port's rate, both ways (default 400)")
    p.add_argument("--deadline", type=float, default=900.0, help="seconds allowed per system and N (default 900)")
    p.add_argument("--json", action="store_true", help="print the rows as a JSON list")
    p.add_argument("--keep", action="store_true", help="keep the work directory (every node's log, configs, data)")
    p.add_argument("--plot", type=Path, help="write a PNG of completion time and WAN bytes against N")
    p.add_argument("--prefix", default=PREFIX,
                   help=f"namespace names start with this (default {PREFIX}); another one runs beside other netsim runs")
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
    systems = [s for s in SYSTEMS if s in args.systems.split(",")]
    unknown = sorted(set(args.systems.split(",")) - set(SYSTEMS))
    try:
        if unknown:
            raise PosswarmError(f"--systems: {', '.join(unknown)} not one of {', '.join(SYSTEMS)}")
        payloads.check_kind(args.payload)
        if "varnish" in systems:
            check_installed()
    except PosswarmError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    code, rows = run_reporting(lambda workdir: bench(args, counts, systems, workdir), prog=PROG, keep=args.keep)
    if code:
        return code
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(table(rows, args))
    if args.plot:
        plot(rows, args, args.plot)
    return 0


async def bench(args, counts: list[int], systems: list[str], workdir: Path) -> list[dict]:
    """For each N, in one network of 1 store x N devices: posswarm, then each HTTP baseline, on one image."""
    rows, rates = [], (args.wan_mbit, args.lan_mbit)
    for n in counts:
        scenario = Scenario(1, n, args.image_mb, args.wan_mbit, args.lan_mbit, deadline_s=args.deadline,
                            payload=args.payload, prefix=args.prefix)
        topo = plan(1, n, wan_mbit=args.wan_mbit, lan_mbit=args.lan_mbit, prefix=args.prefix)
        (workdir / f"n{n}").mkdir()
        async with emulated_network(topo, workdir / f"n{n}") as net:
            async with trio.open_nursery() as swarm:
                swarm_result = await rollout(net, swarm, scenario)
                swarm.cancel_scope.cancel()  # the baselines get the machine to themselves
            image = net.workdir / "payload" / "v1.img"
            packed = await compress(image)
            (packed.parent / "http").mkdir()  # served alone: the static servers list nothing else
            packed = packed.rename(packed.parent / "http" / packed.name)
            found = {}
            for name in (s for s in systems if s != "posswarm"):  # posswarm ran above, always
                async with trio.open_nursery() as http:
                    found[name] = await BASELINES[name](net, http, image, packed, args.deadline)
                    http.cancel_scope.cancel()
        store = swarm_result["stores"][0]
        mine = [_row("posswarm", n, swarm_result["completion_s"], swarm_result["stored_bytes"],
                     store["wan_bytes_in"], rates, cache_s=store["cache_installed_s"], learned_s=store["cache_learned_s"],
                     fetch_s=_fetch_s(store.get("wan_timeline")))]
        mine[0].update(light_nodes=swarm_result["light_nodes"], processes=swarm_result["processes"])
        for name, r in found.items():
            wan = max(s["wan_bytes_in"] for s in r["stores"])
            varnish = r["stores"][0].get("varnish")
            mine.append(_row(name, n, r["completion_s"], packed.stat().st_size, wan, rates,
                             cache_s=r["stores"][0].get("cache_installed_s"), varnish=varnish,
                             fetch_s=varnish["fetch_s"] if varnish else None))
        for row in mine:
            row.update(image_bytes=swarm_result["image_bytes"], payload=args.payload)
            if "varnish" in found:
                row["vs_varnish"] = round(row["completion_s"] / found["varnish"]["completion_s"], 3)
        rows += mine
        logs.get("bench").info("bench.done", devices=n, rows=mine)
    return rows


def _fetch_s(timeline: dict | None) -> float | None:
    """How long the store's WAN carried the release: its router's first to last byte of it."""
    return None if timeline is None else round(timeline["last_byte_s"] - timeline["first_byte_s"], 2)


def _row(system: str, n: int, completion_s: float, wire_bytes: int, wan_bytes: int, rates: tuple[float, float], *,
         cache_s: float | None = None, learned_s: float = 0.0, varnish: dict | None = None,
         fetch_s: float | None = None) -> dict:
    """One table row. wire_bytes = what must cross the WAN once (posswarm: its stored chunks; HTTP: the .zst);
    cache_s = the store cache had it all; learned_s = when it knew of the release (HTTP: at once);
    fetch_s = the store's one WAN fetch, first to last byte (posswarm: router counters; Varnish: its log)."""
    ideal = ideal_s(wire_bytes, *rates)
    row = {
        "system": system,
        "devices": n,
        "completion_s": round(completion_s, 2),
        "wire_bytes": wire_bytes,
        "ideal_s": round(ideal, 2),
        "completion_ratio": round(completion_s / ideal, 3),
        "wan_bytes": wan_bytes,
        "wan_amplification": round(wan_bytes / wire_bytes, 4),
        "cache_s": cache_s,
        "learned_s": learned_s,
    }
    if varnish is not None:
        row["varnish"] = varnish
    if fetch_s:
        row["fetch_s"] = fetch_s
        row["fetch_mbit"] = round(wire_bytes * 8 / fetch_s / 1e6, 2)  # payload over the WAN while it fetched
    return row


def table(rows: list[dict], args) -> str:
    """The rows as a markdown table (the CLI's output and docs/benchmarks.md's, alike)."""
    lines = [f"Image {args.image_mb} MiB ({args.payload}), WAN {args.wan_mbit:g} Mbit/s, LAN {args.lan_mbit:g} Mbit/s, "
             "1 store.", "",
             "| system | N | completion_s | ÷ varnish | on the wire (MiB) | ideal_s | ratio | WAN / wire | cache_s "
             "| learned_s |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        cache = f"{r['cache_s']:.2f}" if r["cache_s"] is not None else "-"
        versus = f"{r['vs_varnish']:.2f}" if "vs_varnish" in r else "-"
        lines.append(f"| {r['system']} | {r['devices']} | {r['completion_s']:.2f} | {versus} "
                     f"| {r['wire_bytes'] / 2**20:.1f} | {r['ideal_s']:.2f} | {r['completion_ratio']:.2f} "
                     f"| {r['wan_amplification']:.3f} | {cache} | {r.get('learned_s', 0.0):.2f} |")
    fetches = [r for r in rows if "fetch_mbit" in r]
    if fetches:
        lines.append("\nThe store's WAN fetch, first to last byte (Varnish: its one backend fetch), and its payload "
                     f"rate against the link's {args.wan_mbit:g} Mbit/s: "
                     + "; ".join(f"{r['system']} at N = {r['devices']}: {r['fetch_s']:.2f} s, {r['fetch_mbit']:.1f} Mbit/s"
                                 for r in fetches) + ".")
    for r in (r for r in rows if "light_nodes" in r):
        lines.append(f"\nposswarm at N = {r['devices']}: {light_line(r['light_nodes'])}.")
    checked = [r for r in rows if "varnish" in r]
    for r in checked:
        v = r["varnish"]
        lines.append(f"\nVarnish at N = {r['devices']}: {v['backend_fetches']} backend fetch for {v['tills_served']} "
                     f"tills ({v['coalesced']} waited on it, {v['tills_streamed']} were served while it ran; the "
                     f"first delivery began {v['first_delivery_before_fetch_end_s']:.2f} s before it ended), "
                     f"fetch {v['fetch_s']:.2f} s.")
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
    # posswarm, varnish and http-cache all sit near 1.0 WAN: the line styles keep each visible
    styles = {"posswarm": ("o", "-"), "varnish": ("D", ":"), "http-central": ("s", "-"), "http-cache": ("^", "--")}
    for system in SYSTEMS:
        mine = sorted((r for r in rows if r["system"] == system), key=lambda r: r["devices"])
        if not mine:
            continue
        n = [r["devices"] for r in mine]
        marker, line = styles[system]
        time_ax.plot(n, [r["completion_s"] for r in mine], marker=marker, linestyle=line, label=system)
        wan_ax.plot(n, [r["wan_amplification"] for r in mine], marker=marker, linestyle=line, label=system)
    ideal = min(r["ideal_s"] for r in rows)
    time_ax.axhline(ideal, color="grey", linestyle=":", label="ideal (the smallest wire size once at WAN rate)")
    time_ax.set(xlabel="devices per store (N)", ylabel="last device done (s)", title="completion time", yscale="log")
    wan_ax.set(xlabel="devices per store (N)", ylabel="WAN bytes / its wire size", title="WAN bytes into the store")
    for ax in (time_ax, wan_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"{args.image_mb} MiB image ({args.payload}), WAN {args.wan_mbit:g} Mbit/s, LAN {args.lan_mbit:g} Mbit/s")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"plot written to {path}", file=sys.stderr)
