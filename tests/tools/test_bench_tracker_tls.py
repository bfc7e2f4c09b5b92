"""`posswarm-bench tracker --certificates` at a tiny size: real enrolled tills, a real tracker over mutual TLS."""

from __future__ import annotations

import json

from tools import bench_tracker


def test_kept_connections_cost_the_tracker_less_per_announce_than_a_handshake_each(capsys):
    assert bench_tracker.main(["--certificates", "--nodes", "10", "--connections", "4", "--duration", "1",
                               "--idle", "100", "--fleet-tills", "1000"]) == 0
    result = json.loads(capsys.readouterr().out)
    new, kept, idle = result["new_handshake"], result["kept"], result["idle"]
    plain = result["idle_plain_http"]
    assert new["failures"] == kept["failures"] == idle["failures"] == plain["failures"] == 0
    assert new["announces"] > 0 and kept["announces"] > 0 and idle["opened"] == plain["opened"] == 100
    # A handshake (~1.3 ms of the tracker's CPU, quiet) is several announces' worth on a kept connection.
    assert kept["tracker_cpu_us_per_announce"] * 2 < new["tracker_cpu_us_per_announce"], result
    assert idle["bytes_per_connection"] > 0 and result["fleet"]["cores_kept"] < result["fleet"]["cores_new_handshake"]
