"""Central without a single machine in netsim: two trackers on one Redis and two seeders on one releases
directory and one PostgreSQL behind HAProxy (contrib/haproxy), one of each SIGKILLed half-way through a
rollout while every till sells and an operator watches the dashboard."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from functools import partial
from pathlib import Path

import trio

from posswarm import logs
from posswarm.errors import PosswarmError
from tools.lab import bin_path, run_process
from tools.netsim import netns
from tools.netsim.ha_clients import DASHBOARD_EVERY_S
from tools.netsim.ha_prices import PRICE_BEFORE, Prices
from tools.netsim.network import ANNOUNCE_INTERVAL_S, STARTUP_TIMEOUT_S, Network
from tools.pg_server import server_bin, throwaway_postgres
from tools.pos_ledger import PosLedger
from tools.sales_rig import percentile
from tools.sales_verdict import exactly_once, verdict

log = logs.get("netsim")

CONFIG = Path(__file__).resolve().parents[2] / "contrib" / "haproxy" / "posswarm-central.cfg"
# Inside central's namespace, which nothing else uses: fixed loopback ports cannot be taken by anyone.
REDIS_PORT, TRACKER_PORTS, SEEDER_PORTS = 6379, (7001, 7002), (8001, 8002)
TRACKER_FRONT, SEEDER_FRONT = 6970, 8443
HALF_WAY = 0.5  # of every cache's bytes, summed, when a tracker and a seeder are killed
SAMPLE_S = 0.1
SALES_PER_S = 1.0  # per till, from before the release is published until every till has it
SETTLE_S = 60.0  # after the last sale is answered: until central holds every one
STOP_S = 30.0  # for a till's POS to finish the sale in flight once told to stop
PRICE_WAIT_S = 30.0  # after the rollout: for the price changed after the kill to reach every cache


class Pair:
    """Central's processes, two of each, and what the run measured about losing one of each."""

    def __init__(self, net: Network, sales_db: str) -> None:
        self.net = net
        self.sales_db = sales_db
        self.pids: dict[str, int] = {}
        self.killed_at: float | None = None
        self.killed_ms = 0  # wall clock, as central's received_ms

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
                    "--bt-listen", f"{ip}:0", "--data-dir", str(central / f"seeder-{i}"), "--sales-db", self.sales_db,
                    # one SKU catalog for both: either serves a cache's cursor, one signs, the other takes over
                    "--sku-db", self.sales_db, "--sku-key", str(net.central_keys.key("sku")),
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
                self.killed_at, self.killed_ms = time.monotonic(), round(time.time() * 1000)
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


def dashboard_gap(polls: list[tuple[float, str]]) -> tuple[float, float] | None:
    """The longest time from one 200 of the dashboard to the next (the last poll closes the run), and when it
    began; None: never 200."""
    oks = [at for at, status in polls if status == "200"]
    if not oks:
        return None
    marks = [*oks, polls[-1][0]]
    return max(((b - a, a) for a, b in zip(marks, marks[1:])), default=(0.0, oks[0]))


def dashboard_gap_s(polls: list[tuple[float, str]]) -> float | None:
    gap = dashboard_gap(polls)
    return None if gap is None else round(gap[0], 2)


class Tills:
    """A POS at every till, each in the till's namespace with a ledger of its own, selling at SALES_PER_S."""

    def __init__(self, net: Network) -> None:
        self.net = net
        self.root = net.workdir / "pos"
        self.root.mkdir(exist_ok=True)
        self.stop_file = self.root / "stop"
        self.processes: list[trio.Process] = []

    def _paths(self, node_id: str) -> tuple[Path, Path]:
        return self.root / f"{node_id}.ledger.sqlite", self.root / f"{node_id}.latencies.json"

    async def start(self) -> None:
        for store in self.net.topo.stores:
            for device in store.devices:
                ledger, latencies = self._paths(device.node_id)
                cmd = netns.exec_prefix(device.namespace) + [
                    sys.executable, "-m", "tools.netsim.ha_clients", "till", "--name", device.node_id,
                    "--api-url-file", str(self.net.data_dir(device) / "api.url"), "--ledger", str(ledger),
                    "--latencies", str(latencies), "--stop-file", str(self.stop_file), "--rate", str(SALES_PER_S)]
                with open(self.net.logs / f"pos-{device.node_id}.log", "ab") as log:
                    self.processes.append(await trio.lowlevel.open_process(cmd, stdout=log, stderr=log))

    async def stop(self) -> None:
        """Let each POS finish the sale it is on, then wait for it to exit."""
        self.stop_file.touch()
        with trio.fail_after(STOP_S):
            for process in self.processes:
                if await process.wait() != 0:
                    raise PosswarmError(f"a till's POS exited with {process.returncode} (see {self.net.logs}/pos-*.log)")

    def kill(self) -> None:
        for process in self.processes:
            if process.returncode is None:
                process.kill()

    def attempted(self) -> tuple[dict, list[float]]:
        """Every till's ledger merged, and every answered request's milliseconds at the POS."""
        attempted, latencies = {}, []
        for store in self.net.topo.stores:
            for device in store.devices:
                ledger_path, latencies_path = self._paths(device.node_id)
                ledger = PosLedger(ledger_path)
                try:
                    attempted.update(ledger.attempted())
                finally:
                    ledger.close()
                latencies += json.loads(latencies_path.read_text())
        return attempted, latencies


class Central:
    """What central's PostgreSQL holds, read inside central's namespace with the real tools."""

    def __init__(self, net: Network, sales_db: str) -> None:
        self.net, self.sales_db = net, sales_db

    async def _run(self, cmd: list[str]) -> str:
        done = await trio.run_process(netns.exec_prefix(self.net.topo.central) + cmd, capture_stdout=True,
                                      capture_stderr=True, check=False)
        if done.returncode != 0:
            raise PosswarmError(f"{Path(cmd[0]).name} in central: {done.stderr.decode(errors='replace').strip()[-300:]}")
        return done.stdout.decode()

    async def query(self, sql: str) -> list[str]:
        return (await self._run([str(server_bin() / "psql"), "-At", "-d", self.sales_db, "-c", sql])).split()

    async def export(self) -> list[dict]:
        """Central's sales as the data platform gets them: ``posswarm-seeder sales export`` (JSONL)."""
        out = self.net.workdir / "central-export.jsonl"
        await self._run([bin_path("posswarm-seeder"), "sales", "export", "--sales-db", self.sales_db,
                         "--out", str(out)])
        return [json.loads(line) for line in out.read_text().splitlines()]


async def _watch_dashboard(net: Network, polls: list[tuple[float, str]], *, task_status=trio.TASK_STATUS_IGNORED):
    """An operator's browser on the dashboard's data through HAProxy."""
    # From central's own namespace: from a store's router it would cross that store's measured WAN.
    cmd = netns.exec_prefix(net.topo.central) + [
        sys.executable, "-m", "tools.netsim.ha_clients", "dashboard", "--url", f"{net.tracker_url}/stats",
        "--ca", str(net.central_keys.authority), "--token-file", str(net.operator_token_file)]
    process = await trio.lowlevel.open_process(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        task_status.started()
        pending = b""
        async for data in process.stdout:
            *lines, pending = (pending + data).split(b"\n")
            for line in lines:
                at, status = line.decode().split(" ", 1)
                polls.append((float(at), status))
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
            await process.wait()


async def failover_rollout(net: Network, nursery: trio.Nursery, scenario) -> dict:
    """The netsim rollout with central as a pair, one of each killed half-way; what that cost, in the result."""
    net.store_data = True
    # central's one PostgreSQL, on its own loopback: both seeders write every sale there
    with throwaway_postgres(prefix=tuple(netns.exec_prefix(net.topo.central))) as sales_db:
        tills = Tills(net)
        try:
            return await _failover_rollout(net, nursery, scenario, tills, Central(net, sales_db))
        finally:
            tills.kill()


async def _failover_rollout(net: Network, nursery: trio.Nursery, scenario, tills: Tills, central: Central) -> dict:
    from tools.netsim.run import rollout

    pair = Pair(net, central.sales_db)
    await pair.start(nursery)
    prices = Prices(net, central._run, central.sales_db)
    await prices.set(PRICE_BEFORE)
    with trio.fail_after(STARTUP_TIMEOUT_S):
        async with trio.open_nursery() as starting:
            for store in net.topo.stores:
                for node in store.nodes:
                    starting.start_soon(net._start_node, nursery, store, node)
        await net._wait_discovered()
    samples: list[tuple[float, int]] = []
    polls: list[tuple[float, str]] = []
    async with trio.open_nursery() as watching:
        await watching.start(_watch_dashboard, net, polls)
        await tills.start()
        watching.start_soon(pair.kill_half_way, "1.0", samples)
        watching.start_soon(prices.change_after_kill, lambda: pair.killed_at)
        result = await rollout(net, nursery, scenario, started=True)
        await tills.stop()
        with trio.move_on_after(PRICE_WAIT_S if pair.killed_at is not None else 0):
            await prices.reached.wait()
        watching.cancel_scope.cancel()
    if pair.killed_at is None:
        raise PosswarmError("central failover: the rollout ended before the caches held half the image; "
                            "use a larger --image-mb or a slower --wan-mbit")
    attempted, pos_ms = await trio.to_thread.run_sync(tills.attempted)
    acknowledged = sum(a.acknowledged for a in attempted.values())
    settled_at = time.monotonic()
    with trio.move_on_after(SETTLE_S):  # settled: every sale a POS was answered for is at central
        while int((await central.query("SELECT count(*) FROM sale"))[0]) < acknowledged:
            await trio.sleep(0.5)
    found = verdict(attempted, await central.export())
    to_central = [int(ms) for ms in await central.query("SELECT received_ms - created_ms FROM sale")]
    after_kill = int((await central.query(f"SELECT count(*) FROM sale WHERE created_ms > {pair.killed_ms}"))[0])
    at = next(done for t, done in samples if t >= pair.killed_at)
    result["central_failover"] = {
        "killed": "tracker-1, seeder-1", "killed_at_percent": round(100 * at / max(samples[-1][1], 1), 1),
        "stalled_s": stalled_s(samples, pair.killed_at),
        "note": "stall: the longest time after the kill in which the caches' bytes, summed, did not grow "
                f"(sampled every {SAMPLE_S} s from status.json, rewritten every 0.5 s)",
    }
    result["sales"] = {
        **found, "exactly_once": exactly_once(found), "per_till_per_s": SALES_PER_S, "rung_after_kill": after_kill,
        "settle_s": round(time.monotonic() - settled_at, 1),
        "pos_p99_ms": percentile([round(ms) for ms in pos_ms], 99), "to_central_p50_ms": percentile(to_central, 50),
        "to_central_p99_ms": percentile(to_central, 99),
        "note": "verdict: central's export against every till's POS ledger, by transaction id; to central: "
                "the sale's created_ms at the till to received_ms in central's PostgreSQL",
    }
    result["sku"] = prices.result(pair.killed_at)
    ok = [at for at, status in polls if status == "200"]
    gap = dashboard_gap(polls)
    (net.workdir / "dashboard-polls.json").write_text(json.dumps({"killed_at": pair.killed_at, "polls": polls}))
    result["dashboard"] = {
        "polls": len(polls), "answered_200": len(ok), "longest_gap_s": dashboard_gap_s(polls),
        "gap_began_after_kill_s": None if gap is None else round(gap[1] - pair.killed_at, 2),
        # the same machine's load without a kill: the gap's yardstick
        "longest_gap_before_kill_s": dashboard_gap_s([p for p in polls if p[0] <= pair.killed_at]),
        "not_200": dict(Counter(status for _, status in polls if status != "200")),
        "after_kill_200": sum(at > pair.killed_at for at in ok),
        "note": f"GET /stats with the operator's token through HAProxy every {DASHBOARD_EVERY_S} s, a new "
                f"connection each; gap: the longest time between two 200s (the run's last poll closes it)",
    }
    return result
