"""Two posswarm-tracker processes on one real redis-server answer for one swarm."""

import subprocess
import sys
from pathlib import Path
from urllib.parse import quote_from_bytes

import fastbencode
import httpx
import trio

from tools.lab import write_operator_token

BIN = Path(sys.executable).parent
H = b"\x55" * 20


async def announce(url, node, ip, left, **extra):
    q = {"info_hash": H, "peer_id": node.encode().ljust(20, b"-"), "port": 6881, "uploaded": 0, "downloaded": 0,
         "left": left, "ip": ip, "node": node, "release": "pos-os@3", "size": 100, "compact": 1, **extra}
    raw = "&".join(f"{k}={quote_from_bytes(v if isinstance(v, bytes) else str(v).encode(), safe='')}"
                   for k, v in q.items())
    async with httpx.AsyncClient() as client:
        return fastbencode.bdecode((await client.get(f"{url}/announce?{raw}")).content)


async def test_two_trackers_share_one_swarm_view(nursery, tmp_path, redis_url, tracker_process):
    config, token = tmp_path / "tracker.toml", write_operator_token(tmp_path / "operator.token")
    config.write_text(f'listen = "127.0.0.1:0"\nopen = true\npeer_store = "redis"\nredis_url = "{redis_url}"\n'
                      f'policy = "completeness"\noperator_token_file = "{token}"\n')
    with trio.fail_after(30):
        first, second = await tracker_process(config), await tracker_process(config)
        assert first != second
        await announce(first, "seed-1", "127.0.0.2", 0, event="completed")
        answer = await announce(second, "leech-1", "127.0.0.3", 100, event="started")
        assert answer[b"peers"] == bytes([127, 0, 0, 2]) + (6881).to_bytes(2, "big")  # learnt via the other tracker
        assert (answer[b"complete"], answer[b"incomplete"]) == (1, 1)
        async with httpx.AsyncClient() as client:
            scrape = fastbencode.bdecode((await client.get(f"{first}/scrape")).content)
            operator = {"authorization": f"Bearer {token.read_text()}"}
            stats = (await client.get(f"{first}/stats", headers=operator)).json()
    assert scrape[b"files"][H] == {b"complete": 1, b"incomplete": 1, b"downloaded": 1}
    nodes = stats["releases"]["pos-os@3"]["stores"]["-"]["nodes"]
    assert sorted(n["node"] for n in nodes) == ["leech-1", "seed-1"]


def test_unreachable_redis_is_a_one_line_start_up_error(tmp_path):
    config = tmp_path / "tracker.toml"
    config.write_text('listen = "127.0.0.1:0"\nopen = true\nopen_stats = true\npeer_store = "redis"\n'
                      'redis_url = "redis://127.0.0.1:1/0"\n')
    done = subprocess.run([str(BIN / "posswarm-tracker"), "serve", "--plain-http", "--config", str(config)],
                          capture_output=True,
                          timeout=30)
    assert done.returncode == 1 and b"Traceback" not in done.stderr
    assert done.stderr.decode().startswith("posswarm-tracker: tracker peer store: cannot reach Redis at redis://127.0.0.1:1/0")
