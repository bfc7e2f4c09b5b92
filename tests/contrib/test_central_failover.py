"""Two trackers on one Redis behind Debian's HAProxy (contrib/haproxy): one is killed mid-rollout, nothing is lost."""

import shutil
import signal
import socket
import subprocess
from pathlib import Path
from urllib.parse import quote_from_bytes

import fastbencode
import httpx
import pytest
import trio

from tests.tracker.conftest import redis_url, stop_with_the_test, tracker_process  # noqa: F401  (real redis-server and trackers)
from tools.lab import write_operator_token

CONFIG = Path(__file__).resolve().parents[2] / "contrib" / "haproxy" / "posswarm-central.cfg"
H = b"\x66" * 20
STORES, TILLS = 4, 5
pytestmark = pytest.mark.skipif(shutil.which("haproxy") is None, reason="Debian haproxy is not installed (CI installs it)")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def _haproxy(nursery, workdir: Path, trackers: list[str], front: int) -> None:
    # maxconn sizes HAProxy's descriptor limit: this machine's hard limit is lower than a central host's.
    config = CONFIG.read_text().replace("198.51.100.10:6969", f"127.0.0.1:{front}").replace("maxconn 20000",
                                                                                            "maxconn 2000")
    for i, url in enumerate(trackers, 1):
        config = config.replace(f"198.51.100.2{i}:6969", url.removeprefix("http://"))
    # This test has no seeders behind the proxy: their section stays, pointed where nothing listens.
    config = config.replace("198.51.100.10:8080", f"127.0.0.1:{_free_port()}")
    for i in (1, 2):
        config = config.replace(f"198.51.100.3{i}:8080", "127.0.0.1:9")
    (workdir / "haproxy.cfg").write_text(config)
    process = await trio.lowlevel.open_process(["haproxy", "-db", "-f", str(workdir / "haproxy.cfg")],
                                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    nursery.start_soon(stop_with_the_test, process)


def _host(node: str) -> int:
    return 1 if node == "cache" else 10 + int(node.rsplit("-", 1)[1])


async def _announce(client: httpx.AsyncClient, store: int, node: str, left: int) -> dict:
    role = "cache" if node == "cache" else "device"
    q = {"info_hash": H, "peer_id": f"{store}{node}".encode().ljust(20, b"-"), "port": 6881, "uploaded": 0,
         "downloaded": 0, "left": left, "ip": f"10.{store}.0.{_host(node)}", "node": node, "role": role,
         "store": f"S{store:04d}", "release": "pos-os@2026.11", "size": 1000, "wan": 1000 if role == "cache" else 0,
         "lan": 1000 - left if role == "device" else 0, "installed": int(left == 0), "compact": 1}
    raw = "&".join(f"{k}={quote_from_bytes(v if isinstance(v, bytes) else str(v).encode(), safe='')}"
                   for k, v in q.items())
    answer = await client.get(f"/announce?{raw}")
    assert answer.status_code == 200, answer.text
    decoded = fastbencode.bdecode(answer.content)
    assert b"failure reason" not in decoded, decoded
    return decoded


async def _healthy(client: httpx.AsyncClient) -> bool:
    try:
        return (await client.get("/healthz")).status_code == 200
    except httpx.TransportError:
        return False


async def test_killing_one_tracker_mid_rollout_loses_no_store_and_the_dashboard_stays_up(
        nursery, tmp_path, redis_url, tracker_process):  # noqa: F811
    config, token = tmp_path / "tracker.toml", write_operator_token(tmp_path / "operator.token")
    config.write_text(f'listen = "127.0.0.1:0"\nopen = true\npeer_store = "redis"\nredis_url = "{redis_url}"\n'
                      f'interval = 5\noperator_token_file = "{token}"\n')
    front = _free_port()
    with trio.fail_after(60):
        (first, doomed), second = await tracker_process(config, with_process=True), await tracker_process(config)
        await _haproxy(nursery, tmp_path, [first, second], front)
        # A connection per request, as store nodes behind NAT mostly make: none is reused after HAProxy closed it.
        no_reuse = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{front}", timeout=10, limits=no_reuse) as client:
            while not await _healthy(client):  # HAProxy up and its checks passed
                await trio.sleep(0.1)
            tills = [f"till-{j}" for j in range(TILLS)]
            for store in range(STORES):  # half-way: caches done, every till half there
                await _announce(client, store, "cache", 0)
                for till in tills:
                    await _announce(client, store, till, 500)
            doomed.send_signal(signal.SIGKILL)  # a machine lost, not a clean stop
            # Every announce after it is answered, through the one address the stores know.
            answered = 0
            for store in range(STORES):
                for till in tills:
                    peers = (await _announce(client, store, till, 0))[b"peers"]
                    # Its own store's nodes, which the other tracker recorded in the shared Redis.
                    hosts = {bytes(peers[i:i + 4]) for i in range(0, len(peers), 6)}
                    assert hosts and all(h[:2] == bytes([10, store]) for h in hosts), (store, till, hosts)
                    answered += 1
            # The operator's token is the same on both trackers: whichever answers, it is let in.
            operator = {"authorization": f"Bearer {token.read_text()}"}
            stats = (await client.get("/stats", headers=operator)).json()["releases"]["pos-os@2026.11"]
            page = await client.get("/", headers=operator)
    assert answered == STORES * TILLS
    assert stats["stores_total"] == STORES and stats["devices_installed"] == STORES * TILLS
    assert page.status_code == 200 and f"<b>{STORES}</b> stores" in page.text
