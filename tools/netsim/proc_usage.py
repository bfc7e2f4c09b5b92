"""What each process of a run costs the machine: CPU-seconds and peak anonymous memory, read from /proc."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
MIB = 1 << 20


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of ``pid`` so far (None once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat.rpartition(")")[2].split()  # the command name may hold spaces and parentheses
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_anon_bytes(pid: int) -> int | None:
    """RssAnon of ``pid`` now: its private memory, without the shared libraries and page cache (None once gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    for line in text.splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    return None


@dataclass
class Usage:
    """One process over a window: CPU at its start, the latest CPU reading and the largest RssAnon seen."""

    cpu_start: float
    cpu_now: float
    peak_rss_anon: int = 0

    @property
    def cpu_s(self) -> float:
        return self.cpu_now - self.cpu_start


@dataclass
class UsageWindow:
    """Processes by name, followed from ``start`` to the last ``sample``; peaks need sampling often (0.1 s)."""

    pids: dict[str, int]
    seen: dict[str, Usage] = field(default_factory=dict)

    def start(self) -> None:
        self.seen = {}
        for name, pid in self.pids.items():
            cpu = cpu_seconds(pid)
            if cpu is not None:
                self.seen[name] = Usage(cpu, cpu, rss_anon_bytes(pid) or 0)

    def sample(self) -> None:
        for name, usage in self.seen.items():
            pid = self.pids[name]
            cpu, rss = cpu_seconds(pid), rss_anon_bytes(pid)
            if cpu is not None:
                usage.cpu_now = cpu
            if rss is not None:
                usage.peak_rss_anon = max(usage.peak_rss_anon, rss)

    def report(self, seconds: float) -> dict[str, dict]:
        """Per process: CPU-seconds, share of one core over ``seconds`` and peak RssAnon in MiB."""
        return {name: {"cpu_s": round(u.cpu_s, 2), "core_percent": round(100 * u.cpu_s / seconds, 2) if seconds else None,
                       "peak_rss_anon_mib": round(u.peak_rss_anon / MIB, 1)}
                for name, u in self.seen.items()}


def light_nodes(topo, idle: dict[str, dict], run: dict[str, dict], image_bytes: int) -> dict:
    """Issue 15's light-node figures: the devices' worst CPU per 64 MiB installed, idle share of a core and
    peak RssAnon; the cache's and central's CPU beside them, to see where the cores went."""
    devices = [d.node_id for s in topo.stores for d in s.devices if d.node_id in run]
    caches = [s.cache.node_id for s in topo.stores if s.cache.node_id in run]
    per_64 = 64 * MIB / image_bytes if image_bytes else 0.0

    def worst(report: dict[str, dict], names: list[str], key: str) -> float | None:
        values = [report[n][key] for n in names if n in report and report[n][key] is not None]
        return max(values) if values else None

    return {
        "device_cpu_s_per_64mib": round(worst(run, devices, "cpu_s") * per_64, 2) if devices else None,
        "device_cpu_s_mean": round(sum(run[n]["cpu_s"] for n in devices) / len(devices), 2) if devices else None,
        "device_idle_core_percent": worst(idle, devices, "core_percent"),
        "device_peak_rss_anon_mib": worst(run, devices, "peak_rss_anon_mib"),
        "cache_cpu_s": worst(run, caches, "cpu_s"),
        "cache_idle_core_percent": worst(idle, caches, "core_percent"),
        "cache_peak_rss_anon_mib": worst(run, caches, "peak_rss_anon_mib"),
        "seeder_cpu_s": run.get("seeder", {}).get("cpu_s"),
        "tracker_cpu_s": run.get("tracker", {}).get("cpu_s"),
        "all_cpu_s": round(sum(u["cpu_s"] for u in run.values()), 2),
    }


def light_line(light: dict) -> str:
    """Where the CPU went, per process kind, and the devices' issue-15 figures."""
    return (f"CPU-s seeder {light['seeder_cpu_s']}, cache {light['cache_cpu_s']}, devices {light['device_cpu_s_mean']} "
            f"each (all {light['all_cpu_s']}); the worst device {light['device_cpu_s_per_64mib']} CPU-s per 64 MiB "
            f"installed, {light['device_idle_core_percent']} % of a core idle, peak RssAnon "
            f"{light['device_peak_rss_anon_mib']} MiB (cache {light['cache_peak_rss_anon_mib']} MiB)")
