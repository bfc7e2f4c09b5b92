"""The data platform's consumer (`posswarm-seeder sales stream --follow`, a real process) SIGKILLed again and again
while store caches keep posting into a real central, restarted from its cursor file each time: what it took before
each kill and what it wrote at last hold every exported sale exactly once, and a page it wrote but had not committed
is all it ever reads twice."""

from __future__ import annotations

import json
import random
import signal
import subprocess

import httpx
import trio

from posswarm.identity.tls import central_context
from posswarm.storedata import central
from seeder.sales_stream import decode
from tools.bench_sales_ingest import _cache_credential, _sales
from tools.lab import bin_path
from tools.sales_rig import Rig

CACHES, TILLS, SALES_PER_TILL, BATCH = 12, 2, 2000, 8  # far more than the caches get to post
LIMIT, KILLS = 25, 6
TOKEN = "stream-operator-" + "0123456789abcdef"


def _lines(path) -> list[dict]:
    """The whole lines a run wrote; a last line cut by the kill has no newline yet and was never committed."""
    text = path.read_text()
    return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()]


def _identity(record: dict) -> tuple:
    return record["store"], record["device_id"], record["incarnation"], record["seq"]


async def test_a_consumer_killed_mid_stream_resumes_from_its_cursor_without_a_gap(tmp_path):
    rng = random.Random(17)
    rig = Rig(tmp_path, 0)
    token = tmp_path / "operator.token"
    token.write_text(TOKEN)
    stores = {f"S{i:03d}": _sales(f"S{i:03d}", TILLS, SALES_PER_TILL, rng) for i in range(CACHES)}
    cursor_file = tmp_path / "platform" / "cursor"
    cursor_file.parent.mkdir()
    killed, posted, exhausted = trio.Event(), {store: 0 for store in stores}, []
    runs: list[tuple] = []  # (output, cursor committed when it was killed, or None for the last run)
    try:
        url = await rig.start_central(operator_token_file=token)
        tls = central_context(rig.central_keys.authority)
        credentials = {store: _cache_credential(rig.central_keys, store) for store in stores}
        consumer = [bin_path("posswarm-seeder"), "sales", "stream", "--central", url, "--cursor-file",
                    str(cursor_file), "--operator-token-file", str(token), "--central-ca",
                    str(rig.central_keys.authority), "--limit", str(LIMIT)]

        async def cache(store: str) -> None:
            async with httpx.AsyncClient(verify=tls, timeout=30.0) as client:
                sales = stores[store]
                for start in range(0, len(sales), BATCH):  # until the last kill, so each one meets new sales
                    answer = await central.post_sales(client, url, store, sales[start:start + BATCH],
                                                      credentials[store])
                    assert answer["stored"] == len(sales[start:start + BATCH]), answer
                    posted[store] += answer["stored"]
                    if killed.is_set():
                        return
                    await trio.sleep(rng.uniform(0.2, 0.6))  # a store's pace, not a wait for anything
                exhausted.append(store)

        async def consume_and_kill() -> None:
            for run in range(KILLS):
                out = tmp_path / "platform" / f"run-{run}.jsonl"
                with open(out, "wb") as f, open(tmp_path / "platform" / "stderr.log", "ab") as err:
                    process = await trio.lowlevel.open_process(
                        [*consumer, "--follow", "--poll-s", "0.05"], stdout=f, stderr=err, stdin=subprocess.DEVNULL)
                # killed at a point of its own reading: once its output grew by some sales since the start
                grow = rng.randint(1, 3 * LIMIT)
                while out.stat().st_size < grow * 200 and process.poll() is None:
                    await trio.sleep(0.01)
                await trio.sleep(rng.uniform(0, 0.3))  # then anywhere in the pages that follow: mid-page, mid-commit
                process.send_signal(signal.SIGKILL)
                await process.wait()
                assert process.returncode == -signal.SIGKILL, f"the consumer exited by itself: {process.returncode}"
                runs.append((out, decode(cursor_file.read_text().strip()) if cursor_file.exists() else 0))
            killed.set()

        with trio.fail_after(180):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(consume_and_kill)
                for store in stores:
                    nursery.start_soon(cache, store)
            out = tmp_path / "platform" / "last.jsonl"
            with open(out, "wb") as f:
                done = await trio.run_process(consumer, stdout=f, capture_stderr=True, check=False)
            assert done.returncode == 0, done.stderr.decode(errors="replace")
            runs.append((out, None))
        exported = await rig.export()
    finally:
        with trio.CancelScope(shield=True):
            await rig.stop_all()

    taken: list[dict] = []
    for (out, committed), after in zip(runs, [*runs[1:], None], strict=True):
        lines = _lines(out)
        if committed is None:
            taken += lines
            continue
        assert [decode(r["cursor"]) for r in lines] == sorted(decode(r["cursor"]) for r in lines)
        kept = [r for r in lines if decode(r["cursor"]) <= committed]
        again = lines[len(kept):]  # out, but its cursor not committed before the kill: the next run reads it again
        assert len(again) <= LIMIT, f"{len(again)} sales would be read twice after one kill"
        read_next = {_identity(r) for r in _lines(after[0])}
        assert {_identity(r) for r in again} <= read_next
        taken += kept
        print(f"run {out.name}: {len(lines)} written, {len(kept)} taken up to {committed}, {len(again)} read again")
    positions = [decode(r["cursor"]) for r in taken]
    assert positions == sorted(set(positions)), "a position read twice, or one below a position already passed"
    assert exhausted == [], "caches ran out of sales before the last kill: nothing to race"
    assert len(exported) == sum(posted.values())
    by_identity = [_identity(r) for r in taken]
    by_txn = [r["txn"] for r in taken]
    assert len(by_identity) == len(set(by_identity)) and len(by_txn) == len(set(by_txn))
    assert sorted(by_identity) == sorted(_identity(r) for r in exported)
    assert sorted(by_txn) == sorted(r["txn"] for r in exported)
    assert [{k: v for k, v in r.items() if k != "cursor"} for r in sorted(taken, key=_identity)] == sorted(
        exported, key=_identity)
    assert sum(1 for _, committed in runs if committed) >= KILLS // 2  # most kills came after pages were taken
