"""CPU-seconds and peak RssAnon of a run's processes, read from /proc (tools/netsim/proc_usage.py)."""

import subprocess
import sys
import time

import pytest

from tools.netsim.proc_usage import MIB, UsageWindow, cpu_seconds, light_nodes, rss_anon_bytes
from tools.netsim.topology import plan

# burns about 0.3 s of CPU, then holds 64 MiB of its own memory until stdin closes
CHILD = ("import sys, time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\n"
         "buf = bytearray(64 << 20)\nprint('ready', flush=True)\nsys.stdin.read()\n")


def test_a_process_cpu_and_memory_over_a_window_are_its_own():
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        window = UsageWindow({"child": child.pid, "gone": 2**22 + 12345})
        window.start()  # before the child burns its CPU
        assert child.stdout.readline() == "ready\n"
        window.sample()
        report = window.report(seconds=1.0)
    finally:
        child.stdin.close()
        child.wait(timeout=10)
    assert "gone" not in report  # a process that is not there is left out, not an error
    assert 0.25 <= report["child"]["cpu_s"] <= 1.0
    assert report["child"]["peak_rss_anon_mib"] >= 64
    assert report["child"]["core_percent"] == pytest.approx(100 * report["child"]["cpu_s"])
    assert cpu_seconds(child.pid) is None and rss_anon_bytes(child.pid) is None  # reaped: gone


def test_this_process_counts_its_own_cpu():
    before = cpu_seconds(__import__("os").getpid())
    end = time.process_time() + 0.2
    while time.process_time() < end:
        pass
    assert cpu_seconds(__import__("os").getpid()) - before >= 0.15


def test_light_nodes_take_the_worst_device_and_scale_to_64_mib():
    topo = plan(1, 2, wan_mbit=40, lan_mbit=400)
    cache, (d1, d2) = topo.stores[0].cache.node_id, [d.node_id for d in topo.stores[0].devices]

    def usage(cpu, percent, rss):
        return {"cpu_s": cpu, "core_percent": percent, "peak_rss_anon_mib": rss}

    run = {"seeder": usage(0.4, 8, 40), cache: usage(1.0, 20, 70), d1: usage(0.6, 12, 75), d2: usage(0.3, 6, 81)}
    idle = {"seeder": usage(0.0, 0.5, 40), cache: usage(0.1, 3.0, 50), d1: usage(0.03, 1.0, 48), d2: usage(0.01, 0.3, 48)}
    light = light_nodes(topo, idle, run, 32 * MIB)
    assert light["device_cpu_s_per_64mib"] == pytest.approx(1.2)  # the worst device, 0.6 s per 32 MiB
    assert light["device_cpu_s_mean"] == pytest.approx(0.45)
    assert light["device_idle_core_percent"] == 1.0
    assert light["device_peak_rss_anon_mib"] == 81
    assert light["cache_cpu_s"] == 1.0 and light["seeder_cpu_s"] == 0.4 and light["tracker_cpu_s"] is None
    assert light["all_cpu_s"] == pytest.approx(2.3)
