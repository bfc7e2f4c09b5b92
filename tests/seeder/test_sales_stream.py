"""Central's sales stream: cursors checked before use, positions in commit order on SQLite and on a real
PostgreSQL written by two seeders at once, older databases numbered on open, and the route behind the operator token."""

from __future__ import annotations

import io
import json
import sqlite3
import threading

import httpx
import pytest
from starlette.applications import Starlette

from posswarm import http_service
from posswarm.errors import PosswarmError
from posswarm.sales import stored
from posswarm.sales.model import Line, Sale, Tender
from seeder import sales, sales_stream, sales_stream_http
from seeder.sales_consumer import commit_cursor, consume, read_cursor, sole_consumer, split_page
from tools.pg_server import server_bin, throwaway_postgres


def _sale(device: str, seq: int, cents: int = 300) -> Sale:
    return Sale(device, "ab" * 16, seq, 1_700_000_000_000 + seq, (Line("SKU1", 1, cents),), cents,
                (Tender("cash", cents),), txn=f"{device}-{seq}")


def test_a_cursor_is_checked_before_it_is_used():
    for position in (0, 1, 41, sales_stream.MAX_POSITION):
        assert sales_stream.decode(sales_stream.encode(position)) == position
    assert sales_stream.decode(None) == sales_stream.decode("") == 0
    for bad in ("41", "s1.", "s1.-1", "s1.041", "s1.4a", "s2.41", "s1.٤١", "s1." + "9" * 19, "s1.1 ", "x" * 5000):
        with pytest.raises(sales_stream.StreamRefused, match="is not one this stream gave") as refused:
            sales_stream.decode(bad)
        assert refused.value.status == 400 and len(str(refused.value)) < 200 and "\n" not in str(refused.value)
    assert sales_stream.parse_limit(None) == sales_stream.DEFAULT_LIMIT and sales_stream.parse_limit("7") == 7
    for bad in ("0", "-1", "10001", "1e3", "x", "9" * 50):
        with pytest.raises(sales_stream.StreamRefused, match="limit"):
            sales_stream.parse_limit(bad)
    with pytest.raises(sales_stream.StreamRefused, match="past the last sale") as ahead:
        sales_stream.check_behind(8, 7)
    assert ahead.value.status == 409
    sales_stream.check_behind(7, 7)


def _stream(store: sales.SalesStore, limit: int = 2) -> list[tuple[int, str, Sale]]:
    seen, after = [], 0
    while True:
        rows, _ = store.after(after, limit)
        seen += rows
        if len(rows) < limit:
            return seen
        after = rows[-1][0]


def _check_positions_follow_commits(store: sales.SalesStore) -> None:
    assert store.ingest("S042", [_sale("till-1", 1), _sale("till-1", 2)]) == (2, 0)
    assert store.ingest_many([("S042", [_sale("till-1", 2), _sale("till-1", 3)]), ("S043", [_sale("till-1", 1)])]
                             ) == [(1, 1), (1, 0)]
    seen = _stream(store)
    assert [(position, shop, sale.key[::2]) for position, shop, sale in seen] == [
        (1, "S042", ("till-1", 1)), (2, "S042", ("till-1", 2)), (3, "S042", ("till-1", 3)), (4, "S043", ("till-1", 1))]
    assert store.after(4, 10) == ([], 4) and store.after(2, 1)[0][0][0] == 3


def test_sqlite_positions_follow_commits_and_skip_repeats(tmp_path):
    store = sales.open_sales(str(tmp_path / "sales.sqlite"))
    _check_positions_follow_commits(store)
    store.close()


def _older_sales(insert) -> None:
    """Three sales as an older central stored them: received in the order S043/1, S042/2, S042/1."""
    for shop, seq, received in (("S042", 1, 30), ("S042", 2, 20), ("S043", 1, 10)):
        insert(f"INSERT INTO sale ({sales._COLUMNS}) VALUES ('{shop}', 'till-1', 'ab', {seq}, 1, 300, {received}, "
               "{p})", stored.pack(_sale("till-1", seq)))


def test_an_older_sqlite_database_is_numbered_in_the_order_it_received(tmp_path):
    path = tmp_path / "sales.sqlite"
    old = sqlite3.connect(path)
    old.executescript(sales._SQLITE_SCHEMA.replace("    position INTEGER,\n", ""))
    _older_sales(lambda sql, body: old.execute(sql.format(p="?"), (body,)))
    old.commit()
    old.close()
    store = sales.open_sales(str(path))
    assert [(shop, sale.seq) for _, shop, sale in _stream(store)] == [("S043", 1), ("S042", 2), ("S042", 1)]
    store.ingest("S044", [_sale("till-1", 1)])
    assert store.after(3, 10)[0][0][:2] == (4, "S044")  # new sales above the numbered ones
    store.close()
    assert [p for _, p in sqlite3.connect(path).execute("SELECT seq, position FROM sale ORDER BY position")] == [
        1, 2, 3, 4]


@pytest.fixture(scope="module")
def postgres():
    pytest.importorskip("psycopg")
    if server_bin() is None:
        pytest.skip("PostgreSQL server binaries are not installed (apt-get install postgresql)")
    with throwaway_postgres({"fsync": "off"}) as dsn:
        yield dsn


def _database(dsn: str, name: str) -> str:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    return dsn.rsplit("/", 1)[0] + "/" + name


def test_postgres_positions_follow_commits_and_skip_repeats(postgres):
    store = sales.open_sales(_database(postgres, "positions"))
    _check_positions_follow_commits(store)
    store.close()


def test_an_older_postgres_database_is_numbered_in_the_order_it_received(postgres):
    import psycopg

    dsn = _database(postgres, "older_positions")
    with psycopg.connect(dsn, autocommit=True) as old:
        old.execute(sales._POSTGRES_SCHEMA.replace("    position BIGINT NOT NULL,\n", ""))
        _older_sales(lambda sql, body: old.execute(sql.format(p="%s"), (body,)))
    store = sales.open_sales(dsn)
    assert [(shop, sale.seq) for _, shop, sale in _stream(store)] == [("S043", 1), ("S042", 2), ("S042", 1)]
    store.ingest("S044", [_sale("till-1", 1)])
    assert store.after(3, 10)[0][0][:2] == (4, "S044")
    store.close()
    sales.open_sales(dsn).close()  # numbered once: opening again changes nothing


def test_two_seeders_on_one_postgres_never_commit_below_what_a_reader_passed(postgres):
    """Two writers commit batches of differing sizes at once while a reader pages through as fast as it can and never
    reads a position twice: a sale committed at or below a position it already passed would be missing at the end."""
    dsn = _database(postgres, "two_writers")
    writers = [sales.open_sales(dsn), sales.open_sales(dsn)]
    reader = sales.open_sales(dsn)
    rounds, done, failures = 60, threading.Event(), []
    expected = {(f"S{w}{r:02d}", "till-1", n) for w in range(2) for r in range(rounds) for n in range(1, 2 + r % 7 * 40)}

    def write(index: int) -> None:
        try:
            for r in range(rounds):
                shop = f"S{index}{r:02d}"
                writers[index].ingest(shop, [_sale("till-1", n) for n in range(1, 2 + r % 7 * 40)])
        except Exception as exc:  # noqa: BLE001 - reported by the test below
            failures.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    seen, after, pages = [], 0, 0
    while True:
        finished = done.is_set()
        rows, _ = reader.after(after, 50)
        pages += 1
        seen += [(position, shop, sale.device_id, sale.seq) for position, shop, sale in rows]
        after = rows[-1][0] if rows else after
        if finished and not rows:
            break
        if not any(thread.is_alive() for thread in threads):
            done.set()
    for store in (*writers, reader):
        store.close()
    assert failures == []
    positions = [s[0] for s in seen]
    assert positions == sorted(set(positions))  # each position once, only ever growing
    got = [s[1:] for s in seen]
    assert len(got) == len(set(got)) and set(got) == expected, f"{len(expected - set(got))} sales skipped"
    assert pages > 10  # the reader really read while both wrote


def _serve_pages(store: sales.SalesStore, records: int) -> None:
    store.ingest_many([("S042", [_sale("till-1", n) for n in range(1, records + 1)])])


async def test_the_route_pages_behind_the_operator_token(nursery, tmp_path):
    store = sales.open_sales(str(tmp_path / "sales.sqlite"))
    _serve_pages(store, 5)
    operator = "op-" + "x" * 30
    gate = sales.operator_gate(operator)
    url = await nursery.start(http_service.run, Starlette(routes=sales_stream_http.routes(store, gate)),
                              "127.0.0.1", 0)
    auth = {"authorization": f"Bearer {operator}"}
    async with httpx.AsyncClient(base_url=url) as client:
        first = await client.get("/sales/stream", params={"limit": "2"}, headers=auth)
        assert first.status_code == 200 and first.headers["content-type"].startswith("application/x-ndjson")
        lines, after, more = split_page(first.content, url)
        assert more and after == "s1.2" and [json.loads(line)["seq"] for line in lines] == [1, 2]
        record = json.loads(lines[0])
        assert record == {**sales.sale_record("S042", _sale("till-1", 1)), "cursor": "s1.1"}
        assert record["txn"] == "till-1-1"  # the POS transaction id, as the export carries it
        rest = await client.get("/sales/stream", params={"after": after}, headers=auth)
        lines, after, more = split_page(rest.content, url)
        assert (not more, after, [json.loads(line)["seq"] for line in lines]) == (True, "s1.5", [3, 4, 5])
        end = await client.get("/sales/stream", params={"after": after}, headers=auth)
        assert split_page(end.content, url) == ([], "s1.5", False)
        for params, status, says in (({"after": "s1.05"}, 400, "cursor 's1.05' is not one this stream gave"),
                                     ({"after": "s1.6"}, 409, "past the last sale"),
                                     ({"limit": "0"}, 400, "limit '0'"),
                                     ({"limit": "100000"}, 400, "from 1 to 10000")):
            refused = await client.get("/sales/stream", params=params, headers=auth)
            assert refused.status_code == status and says in refused.json()["error"], refused.text
        for wrong in ({}, {"authorization": f"Bearer {operator}x"}):
            refused = await client.get("/sales/stream", headers=wrong)
            assert refused.status_code == 401 and "needs the operator token" in refused.json()["error"]


def test_a_page_cut_short_is_not_taken():
    whole = sales_stream.page([(1, {"seq": 1}), (2, {"seq": 2})], 0, 2).encode()
    assert split_page(whole, "u") == (['{"seq":1,"cursor":"s1.1"}', '{"seq":2,"cursor":"s1.2"}'], "s1.2", True)
    for cut in (whole[: whole.rindex(b"\n", 0, -1) + 1], whole[:-5], b"", b'{"seq":1}\n{"next":"s1.2","sales":2,'
                                                                       b'"more":true}\n'):
        with pytest.raises(PosswarmError, match="incomplete or malformed"):
            split_page(cut, "u")


def test_the_cursor_file_is_replaced_whole(tmp_path):
    path = tmp_path / "cursor"
    assert read_cursor(path) == ""
    commit_cursor(path, "s1.7")
    assert read_cursor(path) == "s1.7" and not (tmp_path / "cursor.part").exists()
    for junk in (b"", b"\n", b"two words", b"x" * 100):
        path.write_bytes(junk)
        with pytest.raises(PosswarmError, match=f"cursor file {path} holds no cursor"):
            read_cursor(path)
    with sole_consumer(path):
        with pytest.raises(PosswarmError, match=f"another consumer is using cursor file {path}"), sole_consumer(path):
            pass
    with sole_consumer(path):  # free again once the first let go
        pass


class _Central(httpx.BaseTransport):
    """Pages from a real store's ``after``, as the route builds them (the consumer's ordering is under test)."""

    def __init__(self, store: sales.SalesStore) -> None:
        self.store = store

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        after = sales_stream.decode(request.url.params.get("after"))
        limit = sales_stream.parse_limit(request.url.params.get("limit"))
        rows, _ = self.store.after(after, limit)
        body = sales_stream.page([(p, sales.sale_record(shop, sale)) for p, shop, sale in rows], after, limit)
        return httpx.Response(200, content=body.encode())


class _Killed(Exception):
    pass


class _DiesAfter:
    """An output whose consumer is SIGKILLed at its ``n``-th page: as the page is written (nothing of it out), or
    right after it was flushed (all of it out); what was not flushed is lost, as a killed process's buffer is."""

    def __init__(self, n: int, at: str) -> None:
        self.n, self.at, self.out, self.pending = n, at, [], []

    def write(self, text: str) -> None:
        if self.at == "write" and self._dies():
            raise _Killed
        self.pending.append(text)

    def flush(self) -> None:
        self.out += self.pending
        self.pending = []
        if self.at == "flush" and self._dies():
            raise _Killed

    def _dies(self) -> bool:
        self.n -= 1
        return self.n == 0

    def getvalue(self) -> str:
        return "".join(self.out)


def _resumed(store: sales.SalesStore, cursor_file, kill_at: list[int], at: str, take_page) -> list[dict]:
    """Every line a consumer wrote over several runs, each killed at its page ``kill_at[i]``, the last run whole."""
    lines = []
    with httpx.Client(transport=_Central(store), base_url="http://central") as client:
        for n in [*kill_at, 0]:
            out = _DiesAfter(n, at)
            try:
                take_page(client, cursor_file, out)
            except _Killed:
                pass
            lines += [json.loads(line) for line in out.getvalue().splitlines()]
    return lines


def _once_each(store: sales.SalesStore, lines: list[dict]) -> tuple[set, set, int]:
    """(sales missing, keys seen twice but not as a page read again, lines read again) against the export."""
    exported = io.StringIO()
    sales.export(store, exported, "jsonl")
    want = {(r["store"], r["device_id"], r["incarnation"], r["seq"], r["txn"])
            for r in map(json.loads, exported.getvalue().splitlines())}
    seen = [(r["store"], r["device_id"], r["incarnation"], r["seq"], r["txn"]) for r in lines]
    again = len(seen) - len(set(seen))
    return want - set(seen), set(seen) - want, again


def test_cursor_committed_after_output_never_skips_and_one_committed_before_does(tmp_path):
    """The same kills against the consumer's order (flush, then commit) and against the reverse: only the reverse
    loses sales, so the check below can tell."""
    store = sales.open_sales(str(tmp_path / "sales.sqlite"))
    _serve_pages(store, 24)

    def right(client, cursor_file, out):
        consume(client, "/sales/stream", {}, cursor_file, out, limit=4, follow=False, poll_s=1)

    def wrong(client, cursor_file, out):
        cursor = read_cursor(cursor_file)
        while True:
            lines, after, more = split_page(client.get("/sales/stream", params={"after": cursor, "limit": 4}).content,
                                            "u")
            commit_cursor(cursor_file, after)
            cursor = after
            out.write("".join(line + "\n" for line in lines))
            out.flush()
            if not more:
                return

    kills = [2, 1, 3]
    for at in ("write", "flush"):
        missing, unknown, again = _once_each(store, _resumed(store, tmp_path / f"right-{at}", kills, at, right))
        assert (missing, unknown) == (set(), set()), at
        assert again == (0 if at == "write" else 3 * 4)  # a page out but not committed is read again, no more
    missing, unknown, again = _once_each(store, _resumed(store, tmp_path / "wrong", kills, "write", wrong))
    assert len(missing) == 3 * 4 and unknown == set() and again == 0  # each kill lost the page it had committed
    store.close()
