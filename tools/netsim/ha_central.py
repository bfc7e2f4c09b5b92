"""Central without a single machine in netsim: two trackers on one Redis and two seeders on one releases
directory behind HAProxy (contrib/haproxy), one of each SIGKILLed half-way through a rollout."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from functools import partial
from pathlib import Path

import trio

from posswarm import logs
from posswarm.errors import PosswarmError
from tools.lab import bin_path, run_process
from tools.netsim import netns
from tools.netsim.network import ANNOUNCE_INTERVAL_S, STARTUP_TIMEOUT_S, Network

log = logs.get("netsim")

CONFIG = Path(__file__).resolve().parents[2] / "contrib" / "haproxy" / "posswarm-central.cfg"
# Inside central's namespace, which nothing else uses: fixed loopback ports cannot be taken by anyone.
REDIS_PORT, TRACKER_PORTS, SEEDER_PORTS = 6379, (7001, 7002), (8001, 8002)
TRACKER_FRONT, SEEDER_FRONT = 6970, 8443
HALF_WAY = 0.5  # of every cache's bytes, summed, when a tracker and a seeder are killed
SAMPLE_S = 0.1


class Pair:
    """Central's processes, two of each, and what the run measured about losing one of each."""

    def __init__(self, net: Network) -> None:
        self.net = net
        self.pids: dict[str, int] = {}
        self.killed_at: float | None = None

    async def start(self, nursery: trio.Nursery) -> None:
        net, ns, ip = self.net, self.net.topo.central, self.net.topo.central_ip
        tls_cert, tls_key = net.central_keys.issue_tls([ip])
        authority = str(net.central_keys.authority)
        central = net.workdir / "central"
        with trio.fail_after(STARTUP_TIMEOUT_S):
            await nursery.start(self._redis, ns, central)
            for i, port in enumerate(TRACKER_PORTS, 1):
                config = central / f"tracker-{i}.toml"
                config.write_text(
                    f'listen = "127.0.0.1:{port}"\nopen = true\npeer_store = "redis"\n'
                    f'redis_url = "redis://127.0.0.1:{REDIS_PORT}/0"\ninterval = {ANNOUNCE_INTERVAL_S}\n'
                    f'tls_cert = "{tls_cert}"\ntls_key = "{tls_key}"\nnode_ca = "{authority}"\n'
                    f'operator_token_file = "{net.operator_token_file}"\n')
                await self._run(nursery, f"tracker-{i}", ns, [bin_path("posswarm-tracker"), "serve", "--config",
                                                               str(config)], "tracker")
            net.tracker_url = f"https://{ip}:{TRACKER_FRONT}"
            # HAProxy ends the seeders' TLS (with central's certificate) and passes the trackers' through.
            pem = central / "haproxy.pem"
            pem.write_bytes(tls_cert.read_bytes() + tls_key.read_bytes())
            await self._haproxy(nursery, ns, central, ip, pem)
            for i, port in enumerate(SEEDER_PORTS, 1):
                await self._run(nursery, f"seeder-{i}", ns, [
                    bin_path("posswarm-seeder"), "serve", "--releases", str(net.releases), "--plain-http",
                    "--timestamp-key", str(net.central_keys.key("timestamp")), "--listen", f"127.0.0.1:{port}",
                    "--bt-listen", f"{ip}:0", "--data-dir", str(central / f"seeder-{i}"),
                    "--operator-token-file", str(net.operator_token_file),
                    "--tracker", f"{net.tracker_url}/announce", "--tracker-ca", authority,
                ], "seeder")
            net.seeder_url = f"https://{ip}:{SEEDER_FRONT}"

    async def _run(self, nursery: trio.Nursery, name: str, ns: str, cmd: list[str], kind: str) -> None:
        await nursery.start(partial(self._supervise, name, netns.exec_prefix(ns) + cmd, kind))

    async def _supervise(self, name: str, cmd: list[str], kind: str, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        exited: dict[str, str] = {}
        await run_process(name, cmd, self.net.logs / f"{name}.log", kind=kind, pids=self.pids, exited=exited,
                          task_status=task_status)
        if self.killed_at is None or name not in ("tracker-1", "seeder-1"):
            raise PosswarmError(f"{name} exited while the scenario ran (see {self.net.logs / name}.log)")

    async def _redis(self, ns: str, workdir: Path, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        cmd = netns.exec_prefix(ns) + ["redis-server", "--bind", "127.0.0.1", "--port", str(REDIS_PORT), "--dir",
                                       str(workdir), "--save", "", "--appendonly", "no"]
        await self._daemon("redis", cmd, b"Ready to accept connections", task_status)

    async def _haproxy(self, nursery: trio.Nursery, ns: str, workdir: Path, ip: str, pem: Path) -> None:
        config = CONFIG.read_text().replace("maxconn 20000", "maxconn 2000")
        config = config.replace("198.51.100.10:6970", f"{ip}:{TRACKER_FRONT}")
        config = config.replace("bind 198.51.100.10:8080", f"bind {ip}:{SEEDER_FRONT} ssl crt {pem}")
        config = config.replace("198.51.100.10:6969", "127.0.0.1:6969")  # the HTTP-mode trackers: unused here
        for i in (1, 2):
            config = config.replace(f"198.51.100.2{i}:6970", f"127.0.0.1:{TRACKER_PORTS[i - 1]}")
            config = config.replace(f"198.51.100.2{i}:6969", "127.0.0.1:9")
            config = config.replace(f"198.51.100.3{i}:8080", f"127.0.0.1:{SEEDER_PORTS[i - 1]}")
        (workdir / "haproxy.cfg").write_text(config)
        cmd = netns.exec_prefix(ns) + ["haproxy", "-db", "-f", str(workdir / "haproxy.cfg")]
        await nursery.start(self._daemon, "haproxy", cmd, None)

    async def _daemon(self, name: str, cmd: list[str], ready: bytes | None, task_status) -> None:
        with open(self.net.logs / f"{name}.log", "ab") as out:
            process = await trio.lowlevel.open_process(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            try:
                seen, started = b"", ready is None  # HAProxy says nothing when all is well
                if started:
                    task_status.started()
                async for data in process.stdout:
                    out.write(data)
                    out.flush()
                    seen += data
                    if not started and ready in seen:
                        started = True
                        task_status.started()
                raise PosswarmError(f"{name} exited while the scenario ran (see {self.net.logs / name}.log)")
            finally:
                with trio.CancelScope(shield=True):
                    if process.returncode is None:
                        process.kill()
                    await process.wait()

    async def kill_half_way(self, version: str, samples: list[tuple[float, int]]) -> None:
        """When the caches hold half the release, SIGKILL tracker-1 and seeder-1; meanwhile sample their bytes."""
        from tools.netsim.run import RELEASE

        caches = [s.cache for s in self.net.topo.stores]
        while True:
            held = [self.net.release_of(c, RELEASE, version) or {} for c in caches]
            done = sum(r.get("done_bytes", 0) for r in held)
            wanted = sum(r.get("wanted_bytes", 0) for r in held) or 1
            samples.append((time.monotonic(), done))
            if self.killed_at is None and all(r.get("wanted_bytes") for r in held) and done >= HALF_WAY * wanted:
                self.killed_at = time.monotonic()
                for name in ("tracker-1", "seeder-1"):
                    os.kill(self.pids[name], signal.SIGKILL)
                log.info("netsim.killed", what="tracker-1 seeder-1", held=round(done / wanted, 3))
            await trio.sleep(SAMPLE_S)  # status.json is rewritten every 0.5 s: this only reads files


def stalled_s(samples: list[tuple[float, int]], after: float | None) -> float | None:
    """The longest time after ``after`` in which the caches' bytes did not grow (until they were all there)."""
    if after is None:
        return None
    last_growth, longest, before = after, 0.0, None
    for at, done in samples:
        if at < after:
            before = done
            continue
        if before is not None and done > before:
            longest, last_growth = max(longest, at - last_growth), at
        before = done
    return round(longest, 2)


async def failover_rollout(net: Network, nursery: trio.Nursery, scenario) -> dict:
    """The netsim rollout with central as a pair, one of each killed half-way; what that cost, in the result."""
    from tools.netsim.run import rollout

    pair = Pair(net)
    await pair.start(nursery)
    with trio.fail_after(STARTUP_TIMEOUT_S):
        async with trio.open_nursery() as starting:
            for store in net.topo.stores:
                for node in store.nodes:
                    starting.start_soon(net._start_node, nursery, store, node)
        await net._wait_discovered()
    samples: list[tuple[float, int]] = []
    async with trio.open_nursery() as watching:
        watching.start_soon(pair.kill_half_way, "1.0", samples)
        result = await rollout(net, nursery, scenario, started=True)
        watching.cancel_scope.cancel()
    if pair.killed_at is None:
        raise PosswarmError("central failover: the rollout ended before the caches held half the image; "
                            "use a larger --image-mb or a slower --wan-mbit")
    at = next(done for t, done in samples if t >= pair.killed_at)
    result["central_failover"] = {
        "killed": "tracker-1, seeder-1", "killed_at_percent": round(100 * at / max(samples[-1][1], 1), 1),
        "stalled_s": stalled_s(samples, pair.killed_at),
        "note": "stall: the longest time after the kill in which the caches' bytes, summed, did not grow "
                f"(sampled every {SAMPLE_S} s from status.json, rewritten every 0.5 s)",
    }
    return result
