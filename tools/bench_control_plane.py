"""``posswarm-bench control-plane``: K simulated store caches poll the real seeder's catalog and announce to the
real tracker; central CPU and memory are read from /proc while they do."""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import trio

from posswarm.announce import NodeIdentity, ReleaseReport, announce_url, parse_reply
from posswarm.catalog.client import fetch_catalog
from posswarm.errors import PosswarmError
from tools.lab import Lab, write_image

CLOCK_TICKS = 100  # os.sysconf("SC_CLK_TCK") on Linux


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def _memory_mb(pid: int) -> dict:
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {"rss_mb": int(status["VmRSS"].split()[0]) / 1024, "peak_rss_mb": int(status["VmHWM"].split()[0]) / 1024}


class Fleet:
    """The simulated caches: each polls the catalog every ``poll_s`` and announces every ``announce_s``."""

    def __init__(self, lab: Lab, stores: int, poll_s: float, announce_s: float) -> None:
        self.lab, self.stores, self.poll_s, self.announce_s = lab, stores, poll_s, announce_s
        self.latency = {"catalog": [], "announce": []}
        self.errors: dict[str, int] = {}
        self.counting = False

    def _count(self, what: str, started: float) -> None:
        if self.counting:
            self.latency[what].append(time.perf_counter() - started)

    def _error(self, exc: Exception) -> None:
        if self.counting:
            name = type(exc).__name__
            self.errors[name] = self.errors.get(name, 0) + 1

    async def cache(self, client: httpx.AsyncClient, i: int, releases: list) -> None:
        who = NodeIdentity(f"sim-cache-{i:05d}", f"S{i:05d}", "cache", "cache", f"127.250.{i // 250}.{i % 250 + 1}",
                           6881)
        await trio.sleep(random.uniform(0, self.poll_s))  # spread the fleet over one poll period
        next_announce = trio.current_time() + random.uniform(0, self.announce_s)
        while True:
            started = time.perf_counter()
            try:
                await fetch_catalog(client, self.lab.seeder_url)
                self._count("catalog", started)
            except PosswarmError as exc:
                self._error(exc)
            if trio.current_time() >= next_announce:
                next_announce += self.announce_s
                for m in releases:
                    report = ReleaseReport(m.name, m.version, bytes.fromhex(m.info_hash_v1), m.size, 0, m.size, 0, 0, True)
                    started = time.perf_counter()
                    try:
                        response = await client.get(announce_url(f"{self.lab.tracker_url}/announce", who, report))
                        parse_reply(response.content, tracker_url=self.lab.tracker_url)
                        self._count("announce", started)
                    except (httpx.HTTPError, PosswarmError) as exc:
                        self._error(exc)
            await trio.sleep(self.poll_s)


async def run(args) -> dict:
    root = Path(tempfile.mkdtemp(prefix="posswarm-bench-cp-"))
    try:
        return await _measure(root, args)
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def _measure(root: Path, args) -> dict:
    lab = Lab(root, devices=1, announce_interval_s=int(args.announce_s))
    async with trio.open_nursery() as nursery:
        await lab.start_central(nursery)
        for r in range(args.releases):
            await lab.publish(write_image(root / f"image-{r}.bin", 4, seed=r), f"1.{r}", name=f"app-{r}")
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=args.connections),
                                     verify=lab.central_tls) as client:
            with trio.fail_after(60):
                while len((catalog := await fetch_catalog(client, lab.seeder_url)).releases) < args.releases:
                    await trio.sleep(0.5)  # the seeder scans for new releases every 2 s
            fleet = Fleet(lab, args.stores, args.poll_s, args.announce_s)
            async with trio.open_nursery() as caches:
                for i in range(args.stores):
                    caches.start_soon(fleet.cache, client, i, list(catalog.releases))
                await trio.sleep(args.poll_s + 1)  # warm-up: every cache has started
                cpu0 = {name: _cpu_seconds(pid) for name, pid in lab.pids.items()}
                fleet.counting, started = True, time.monotonic()
                await trio.sleep(args.seconds)
                fleet.counting, elapsed = False, time.monotonic() - started
                cpu1 = {name: _cpu_seconds(pid) for name, pid in lab.pids.items()}
                memory = {name: _memory_mb(pid) for name, pid in lab.pids.items()}
                caches.cancel_scope.cancel()
            peers = (await client.get(f"{lab.tracker_url}/stats", headers=lab.operator_headers)).json()
        nursery.cancel_scope.cancel()
    central = {name: {"cpu_percent_of_one_core": round(100 * (cpu1[name] - cpu0[name]) / elapsed, 1),
                      **{k: round(v, 1) for k, v in memory[name].items()}} for name in cpu0}
    return {
        "stores": args.stores, "releases": args.releases, "seconds": round(elapsed, 1),
        "catalog_poll_s": args.poll_s, "announce_s": args.announce_s,
        "catalog_per_s": round(len(fleet.latency["catalog"]) / elapsed, 1),
        "announces_per_s": round(len(fleet.latency["announce"]) / elapsed, 1),
        "catalog_ms": _percentiles(fleet.latency["catalog"]), "announce_ms": _percentiles(fleet.latency["announce"]),
        "errors": fleet.errors, "central": central,
        "tracker_store_releases": sum(r.get("stores_total", 0) for r in peers.get("releases", {}).values()),
    }


def _percentiles(samples: list[float]) -> dict:
    if len(samples) < 2:
        return {"p50": None, "p99": None}
    q = statistics.quantiles(samples, n=100)
    return {"p50": round(1000 * q[49], 1), "p99": round(1000 * q[98], 1)}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="posswarm-bench control-plane", description=__doc__)
    parser.add_argument("--stores", type=int, default=1000)
    parser.add_argument("--releases", type=int, default=3)
    parser.add_argument("--poll-s", type=float, default=10.0, help="catalog poll period of each cache (node default)")
    parser.add_argument("--announce-s", type=float, default=30.0, help="tracker announce interval")
    parser.add_argument("--seconds", type=float, default=60.0, help="measured period, after one poll period of warm-up")
    parser.add_argument("--connections", type=int, default=200, help="HTTP connections of the load process")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if not 1 <= args.stores <= 60000 or args.releases < 1:
        print("posswarm-bench control-plane: --stores 1..60000 and --releases >= 1", file=sys.stderr)
        return 2
    result = trio.run(run, args)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"{result['stores']} stores x {result['releases']} releases over {result['seconds']} s: "
              f"{result['catalog_per_s']} catalog polls/s (p50 {result['catalog_ms']['p50']} ms, "
              f"p99 {result['catalog_ms']['p99']} ms), {result['announces_per_s']} announces/s "
              f"(p50 {result['announce_ms']['p50']} ms, p99 {result['announce_ms']['p99']} ms), errors {result['errors']}")
        for name, c in result["central"].items():
            print(f"  {name}: {c['cpu_percent_of_one_core']} % of one core, RSS {c['rss_mb']} MB (peak {c['peak_rss_mb']})")
    return 0
