"""``posswarm-stats`` against a running tracker: tables, JSON, filters, and an unreachable tracker."""

import json
import socket
from urllib.parse import quote_from_bytes

import httpx
import pytest
import trio
from rich.console import Console

from posswarm.guess_limit import BURST
from tools import stats
from tools.lab import write_operator_token
from tools.store_watch import StoreWatch
from tracker import server
from tracker.config import TrackerConfig


@pytest.fixture
def token_file(tmp_path):
    """The operator token the trackers of these tests are started with, as an operator's file holds it."""
    return write_operator_token(tmp_path / "operator.token")


def guarded(token_file, **settings) -> TrackerConfig:
    return TrackerConfig(port=0, open=True, operator_token_file=str(token_file), **settings)


async def feed(url):
    async with httpx.AsyncClient(base_url=url) as client:
        for i, (node, role, store, left, wan, lan, installed) in enumerate([
            ("cache-17", "cache", "store-17", 0, 2_000_000, 0, 1),
            ("till-1", "device", "store-17", 0, 0, 2_000_000, 1),
            ("till-2", "device", "store-17", 1_000_000, 0, 1_000_000, 0),
            ("cache-42", "cache", "store-42", 500_000, 3_000_000, 0, 0),
        ]):
            q = {"info_hash": bytes(20), "peer_id": node.encode().ljust(20, b"-"), "port": 6881, "uploaded": 0,
                 "downloaded": 0, "left": left, "ip": f"127.0.0.{10 + i}", "node": node, "role": role, "store": store,
                 "release": "pos-os@2026.11", "size": 2_000_000, "wan": wan, "lan": lan, "installed": installed}
            raw = "&".join(f"{k}={quote_from_bytes(v if isinstance(v, bytes) else str(v).encode(), safe='')}"
                           for k, v in q.items())
            assert b"failure" not in (await client.get("/announce?" + raw)).content


async def test_tables_show_progress_cache_and_wan_amplification(nursery, capsys, token_file):
    url = await nursery.start(server.run, guarded(token_file))
    await feed(url)
    assert await trio.to_thread.run_sync(stats.main, ["--tracker", url, "--token-file", str(token_file)]) == 0
    out = capsys.readouterr().out
    assert "pos-os@2026.11" in out and "store-17" in out and "store-42" in out
    assert "1/2 (50 %)" in out and "installed" in out and "downloading" in out and "1.50" in out

    assert await trio.to_thread.run_sync(stats.main, ["--tracker", url + "/announce", "--token-file", str(token_file),
                                                      "--store", "store-42",
                                                      "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert list(doc["releases"]["pos-os@2026.11"]["stores"]) == ["store-42"]


def test_unreachable_tracker_is_one_line_exit_1(capsys):
    with socket.socket() as s:  # a port nobody listens on: bound, never listening
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
        assert stats.main(["--tracker", url]) == 1
    assert capsys.readouterr().err == f"posswarm-stats: cannot reach tracker at {url} (is posswarm-tracker running?)\n"


async def test_a_server_that_is_not_a_tracker_is_reported(nursery, capsys, token_file):
    url = await nursery.start(server.run, guarded(token_file))
    assert await trio.to_thread.run_sync(stats.main, ["--tracker", url + "/nothing-here", "--token-file",
                                                      str(token_file)]) == 1
    assert "answered HTTP 404" in capsys.readouterr().err


class Clock:
    now = 1_000_000.0

    def __call__(self):
        return self.now


async def test_alert_exit_codes_name_the_offending_stores(nursery, capsys, token_file):
    clock = Clock()
    config = guarded(token_file, interval=10, stats_every=0.001)  # a fresh /stats after the clock jumps
    url = await nursery.start(lambda task_status: server.run(config, clock=clock, task_status=task_status))
    await feed(url)
    capsys.readouterr()  # the tracker's own start-up lines (it runs in this process): only posswarm-stats's count
    run = lambda *argv: trio.to_thread.run_sync(  # noqa: E731
        stats.main, ["--tracker", url, "--token-file", str(token_file), *argv])
    assert await run("--fail-if-amplification-above", "1.6", "--fail-if-stalled") == 0
    assert await run("--fail-if-amplification-above", "1.2") == 1
    assert capsys.readouterr().err == (
        "posswarm-stats: pos-os@2026.11: WAN amplification above 1.2 in store-42 (1.50)\n")
    clock.now += 31  # three 10 s intervals of silence: till-2 (not installed) is a straggler
    assert await run("--fail-if-stalled", "--json") == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["releases"]["pos-os@2026.11"]["devices_stalled"] == 1
    assert captured.err == "posswarm-stats: pos-os@2026.11: stalled devices in store-17 (till-2)\n"


async def test_watch_redraws_then_stops_after_its_rounds(nursery, capsys, token_file):
    url = await nursery.start(server.run, guarded(token_file))
    await feed(url)
    with trio.fail_after(20):
        assert await trio.to_thread.run_sync(stats.main, ["--tracker", url, "--token-file", str(token_file), "--watch",
                                                          "--every", "0.05",
                                                          "--rounds", "3"]) == 0
    assert "store-42" in capsys.readouterr().out
    assert stats.main(["--tracker", url, "--watch", "--every", "0"]) == 2


async def _announce_till_2(url: str, lan: int) -> None:
    q = {"info_hash": bytes(20), "peer_id": b"till-2".ljust(20, b"-"), "port": 6881, "uploaded": 0, "downloaded": 0,
         "left": 2_000_000 - lan, "ip": "127.0.0.12", "node": "till-2", "role": "device", "store": "store-17",
         "release": "pos-os@2026.11", "size": 2_000_000, "wan": 0, "lan": lan, "installed": 0}
    raw = "&".join(f"{k}={quote_from_bytes(v if isinstance(v, bytes) else str(v).encode(), safe='')}"
                   for k, v in q.items())
    async with httpx.AsyncClient(base_url=url) as client:
        assert b"failure" not in (await client.get("/announce?" + raw)).content


async def test_store_watch_shows_each_till_with_a_bar_and_its_receive_rate_over_rounds(nursery, token_file):
    config = guarded(token_file, stats_every=0.001)
    url = await nursery.start(server.run, config)
    await feed(url)
    view = StoreWatch("store-17")
    token = token_file.read_text().strip()
    async with httpx.AsyncClient(base_url=url, headers={"authorization": f"Bearer {token}"}) as client:
        for round_, lan in enumerate((1_000_000, 1_200_000, 1_700_000, 1_700_000)):
            await _announce_till_2(url, lan)
            view.update((await client.get("/stats", params={"store": "store-17"})).json(), now=10.0 * round_)
    console = Console(record=True, width=160)
    console.print(view.render())
    lines = console.export_text().splitlines()
    till_2 = next(line for line in lines if line.lstrip().startswith("till-2"))
    # 200 KB then 500 KB then nothing over 10 s rounds: the spark follows, the last rate is 0 B/s.
    assert "fetching pos-os@2026.11" in till_2 and "▄█▁" in till_2 and " 0 B/s " in till_2
    till_1 = next(line for line in lines if line.lstrip().startswith("till-1"))
    assert "up to date" in till_1 and "1.9 MiB" in till_1
    assert any("pos-os@2026.11" in line and "1/2" in line and "downloading" in line for line in lines)
    assert lines[0].strip() == "store store-17"


async def test_watch_of_one_store_runs_from_the_command_line(nursery, capsys, token_file):
    url = await nursery.start(server.run, guarded(token_file))
    await feed(url)
    with trio.fail_after(20):
        assert await trio.to_thread.run_sync(stats.main, ["--tracker", url, "--token-file", str(token_file),
                                                          "--store", "store-17", "--watch",
                                                          "--every", "0.05", "--rounds", "2"]) == 0
    out = capsys.readouterr().out
    assert "store store-17" in out and "till-2" in out and "store-42" not in out
    with trio.fail_after(20):
        assert await trio.to_thread.run_sync(stats.main, ["--tracker", url, "--token-file", str(token_file),
                                                          "--store", "S-none", "--watch",
                                                          "--rounds", "1"]) == 0
    assert "store S-none: no node of this store has announced" in capsys.readouterr().out


async def test_a_missing_or_wrong_token_is_one_line_naming_the_tracker_and_the_fix(nursery, token_file, tmp_path,
                                                                                    capsys, monkeypatch):
    url = await nursery.start(server.run, guarded(token_file))
    capsys.readouterr()  # the tracker's own start-up lines (it runs in this process): only posswarm-stats's count
    wrong = write_operator_token(tmp_path / "wrong.token")
    for argv, said in (([], "needs the operator token"), (["--token-file", str(wrong)], "refused the operator token")):
        assert await trio.to_thread.run_sync(stats.main, ["--tracker", url, *argv]) == 1
        err = capsys.readouterr().err
        assert err == (f"posswarm-stats: tracker at {url} {said} on /stats (HTTP 401): pass --token-file FILE (or set "
                       f"{stats.TOKEN_FILE_ENV}) with the file the tracker was started with (--operator-token-file)\n")
    (tmp_path / "short.token").write_text("abc")
    assert stats.main(["--tracker", url, "--token-file", str(tmp_path / "short.token")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--token-file" in err and "short.token" in err and "abc" not in err
    for _ in range(BURST):  # past the wrong tokens an address may send, it is told to wait, not that it is wrong
        await trio.to_thread.run_sync(stats.main, ["--tracker", url, "--token-file", str(wrong)])
    capsys.readouterr()
    assert await trio.to_thread.run_sync(stats.main, ["--tracker", url, "--token-file", str(token_file)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"posswarm-stats: tracker at {url} holds this address after too many wrong operator tokens "
                          "(HTTP 429): retry in ") and err.endswith(" s with the right --token-file\n"), err
    monkeypatch.setenv(stats.TOKEN_FILE_ENV, str(token_file))  # the file named once, for every command of a shell
    other = await nursery.start(server.run, guarded(token_file))  # (the first tracker holds this address now)
    capsys.readouterr()  # its log line
    assert await trio.to_thread.run_sync(stats.main, ["--tracker", other, "--json"]) == 0
    assert "releases" in json.loads(capsys.readouterr().out)
