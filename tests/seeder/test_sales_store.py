"""Central's sales store on SQLite and on a real PostgreSQL server, its ingest route and export."""

from __future__ import annotations

import csv
import datetime
import io
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import tempfile
from glob import glob
from pathlib import Path

import httpx
import msgpack
import pytest
import structlog
import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from starlette.applications import Starlette

from posswarm import http_service
from posswarm.identity.credential import load_credential
from posswarm.sales import batch_signature, stored
from posswarm.sales.model import Line, Sale, Tender
from posswarm.wallclock import now_ms
from seeder import cli, sales
from seeder.sales_writer import SalesWriter
from seeder.sku import CentralCatalog, read_csv
from tests.posswarm.test_identity import credential_in


def _sale(device: str, seq: int, cents: int = 300) -> Sale:
    return Sale(device, "ab" * 16, seq, 1_700_000_000_000 + seq, (Line("SKU1", 1, cents),), cents, (Tender("cash", cents),))


def _check_idempotent_store(store: sales.SalesStore) -> None:
    batch = [_sale("till-1", 1), _sale("till-1", 2), _sale("till-2", 1, 500)]
    assert store.ingest("S042", batch) == (3, 0)
    assert store.ingest("S042", batch + [_sale("till-2", 2, 700)]) == (1, 3)  # a resent batch counts once
    assert store.totals() == (4, 300 + 300 + 500 + 700)
    out = io.StringIO()
    assert sales.export(store, out, "jsonl") == 4
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(r["device_id"], r["seq"]) for r in rows] == [("till-1", 1), ("till-1", 2), ("till-2", 1), ("till-2", 2)]
    assert rows[3] == sales.sale_record("S042", _sale("till-2", 2, 700))
    out = io.StringIO()
    sales.export(store, out, "csv")
    table = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert sum(int(r["line_cents"]) for r in table) == 1800 and table[0]["store"] == "S042"


def _check_batches_share_a_transaction(store: sales.SalesStore) -> None:
    """Counts per batch, in arrival order, when one transaction takes many: a sale a batch repeats from an earlier
    batch of the same transaction, or from itself, is that batch's duplicate; another store's same till key is not."""
    store.ingest("S042", [_sale("till-9", 1)])
    batches = [("S042", [_sale("till-9", 1), _sale("till-9", 2)]),  # seq 1 already stored
               ("S042", [_sale("till-9", 2), _sale("till-9", 3), _sale("till-9", 3)]),  # 2 from the batch before
               ("S043", [_sale("till-9", 1), _sale("till-9", 2)]),  # another store: other sales
               ("S042", [])]
    assert store.ingest_many(batches) == [(1, 1), (1, 2), (2, 0), (0, 0)]
    assert store.ingest_many(batches) == [(0, 2), (0, 3), (0, 2), (0, 0)]
    assert store.totals() == (5, 5 * 300)


def test_sqlite_store_counts_each_sale_once(tmp_path):
    store = sales.open_sales(str(tmp_path / "sales.sqlite"))
    _check_idempotent_store(store)
    store.close()


def test_sqlite_batches_in_one_transaction_count_as_alone(tmp_path):
    store = sales.open_sales(str(tmp_path / "sales.sqlite"))
    _check_batches_share_a_transaction(store)
    store.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_dsn():
    """A throwaway PostgreSQL server on a loopback port, run as the unprivileged postgres user."""
    pytest.importorskip("psycopg")
    bins = sorted(glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins or not shutil.which("runuser") and os.geteuid() == 0:
        pytest.skip("PostgreSQL server binaries are not installed (apt-get install postgresql)")
    bindir = Path(bins[-1]).parent
    user = "postgres" if os.geteuid() == 0 else None
    root = Path(tempfile.mkdtemp(prefix="posswarm-pg-"))
    os.chmod(root, 0o777)
    data, port = root / "data", _free_port()

    def run(*cmd: str) -> None:
        full = ["runuser", "-u", user, "--", *cmd] if user else list(cmd)
        subprocess.run(full, check=True, capture_output=True, timeout=120)

    run(str(bindir / "initdb"), "-D", str(data), "-U", "posswarm", "--auth=trust", "-E", "UTF8")
    run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-t", "60", "start",
        "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off")
    try:
        yield f"postgresql://posswarm@127.0.0.1:{port}/postgres"
    finally:
        run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


def test_postgres_store_counts_each_sale_once(postgres_dsn):
    store = sales.open_sales(postgres_dsn)
    _check_idempotent_store(store)
    store.close()
    again = sales.open_sales(postgres_dsn)  # the schema is created once and reused
    assert again.totals() == (4, 1800)
    again.close()


def test_postgres_batches_in_one_transaction_count_as_alone(postgres_dsn):
    import psycopg

    with psycopg.connect(postgres_dsn, autocommit=True) as admin:
        admin.execute("CREATE DATABASE batches")
    store = sales.open_sales(postgres_dsn.rsplit("/", 1)[0] + "/batches")
    _check_batches_share_a_transaction(store)
    store.close()


async def test_a_batch_answered_only_once_its_transaction_committed(tmp_path):
    path = tmp_path / "sales.sqlite"
    store = sales.open_sales(str(path))
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # holds the file's write lock: the writer's transaction cannot commit yet
    answers, answered = [], trio.Event()
    async with trio.open_nursery() as nursery:
        writer = await nursery.start(SalesWriter(store).run)

        async def cache() -> None:
            answers.append(await writer.ingest("S042", [_sale("till-1", 1)]))
            answered.set()

        nursery.start_soon(cache)
        await trio.testing.wait_all_tasks_blocked()  # the batch taken, its transaction waiting for the lock
        assert answers == [] and blocker.execute("SELECT COUNT(*) FROM sale").fetchone() == (0,)
        blocker.execute("COMMIT")
        with trio.fail_after(30):
            await answered.wait()
        nursery.cancel_scope.cancel()
    assert answers == [(1, 0)] and store.totals() == (1, 300)
    store.close()


async def test_a_batch_postgres_refuses_fails_only_itself_not_its_transaction(postgres_dsn):
    import psycopg

    with psycopg.connect(postgres_dsn, autocommit=True) as admin:
        admin.execute("CREATE DATABASE refused")
    store = sales.open_sales(postgres_dsn.rsplit("/", 1)[0] + "/refused")
    writer, outcomes, all_answered = SalesWriter(store), {}, trio.Event()

    async def cache(shop: str, device: str) -> None:
        try:
            outcomes[shop] = await writer.ingest(shop, [_sale(device, 1)])
        except sales.PosswarmError as exc:
            outcomes[shop] = str(exc)
        if len(outcomes) == 3:
            all_answered.set()

    async with trio.open_nursery() as nursery:
        for shop, device in (("S041", "till-1"), ("S042", "till\x00nul"), ("S043", "till-1")):
            nursery.start_soon(cache, shop, device)
        await trio.testing.wait_all_tasks_blocked()  # all three queued: the writer takes them in one transaction
        await nursery.start(writer.run)
        with trio.fail_after(30):
            await all_answered.wait()
        nursery.cancel_scope.cancel()
    assert outcomes["S041"] == outcomes["S043"] == (1, 0), outcomes
    assert "write failed" in outcomes["S042"] and "the cache will retry" in outcomes["S042"]
    assert store.totals() == (2, 600)
    store.close()


def test_a_postgres_table_keyed_without_the_store_is_migrated_in_place(postgres_dsn):
    import psycopg

    with psycopg.connect(postgres_dsn, autocommit=True) as admin:
        admin.execute("CREATE DATABASE older")
    dsn = postgres_dsn.rsplit("/", 1)[0] + "/older"
    with psycopg.connect(dsn, autocommit=True) as old:
        old.execute(sales._POSTGRES_SCHEMA.replace("PRIMARY KEY (store, device_id", "PRIMARY KEY (device_id")
                    .replace("    position BIGINT NOT NULL,\n", ""))  # as older posswarm made it
        old.execute(f"INSERT INTO sale ({sales._COLUMNS}) VALUES ('S042', 'till-1', %s, 1, 1, 300, 1, %s)",
                    ("ab" * 16, stored.pack(_sale("till-1", 1))))
    store = sales.open_sales(dsn)
    assert store.totals() == (1, 300)
    assert store.ingest("S043", [_sale("till-1", 1)]) == (1, 0)  # another store's till key: another sale
    assert store.ingest("S042", [_sale("till-1", 1)]) == (0, 1)
    store.close()


def test_postgres_unreachable_is_one_line_error():
    pytest.importorskip("psycopg")
    with pytest.raises(sales.PosswarmError, match="sales db postgresql://\\*\\*\\*@127.0.0.1:1/x"):
        sales.open_sales("postgresql://u:secret@127.0.0.1:1/x")


async def test_ingest_route_validates_and_dedupes(nursery, tmp_path):
    store = sales.open_sales(str(tmp_path / "sales.sqlite"))
    authority = Ed25519PrivateKey.generate()
    cache = load_credential(credential_in(tmp_path, authority, node_id="cache", role="cache"),
                            (authority.public_key(),), now=datetime.datetime.now(datetime.UTC))
    operator = "op-" + "x" * 30
    writer = await nursery.start(SalesWriter(store).run)
    app = Starlette(routes=sales.routes(writer, lambda: [authority.public_key()], sales.operator_gate(operator)))
    url = await nursery.start(http_service.run, app, "127.0.0.1", 0)
    body = msgpack.packb([_sale("till-1", 1).to_wire(), _sale("till-1", 2).to_wire()])

    def signed(data: bytes) -> dict:
        return batch_signature.sign(cache.key, cache.certificate, "S042", data, now_ms=now_ms())

    async with httpx.AsyncClient(base_url=url) as client:
        first = await client.post("/sales/ingest", params={"store": "S042"}, content=body, headers=signed(body))
        again = await client.post("/sales/ingest", params={"store": "S042"}, content=body, headers=signed(body))
        assert first.json() == {"stored": 2, "duplicates": 0} and again.json() == {"stored": 0, "duplicates": 2}
        wire = _sale("till-1", 3).to_wire()
        wire[5] = 999_999  # total no longer the sum of the lines
        forged = msgpack.packb([wire])
        bad = await client.post("/sales/ingest", params={"store": "S042"}, content=forged, headers=signed(forged))
        assert bad.status_code == 400 and "not the sum" in bad.json()["error"]
        junk = b"\xc1junk"
        assert (await client.post("/sales/ingest", params={"store": "S042"}, content=junk,
                                  headers=signed(junk))).status_code == 400
        assert (await client.post("/sales/ingest", content=body, headers=signed(body))).status_code == 400
        totals = await client.get("/sales/totals", headers={"authorization": f"Bearer {operator}"})
        assert totals.json() == {"sales": 2, "cents": 600}
        for wrong in ({}, {"authorization": f"Bearer {operator}x"}, {"authorization": f"Basic {operator}"}):
            refused = await client.get("/sales/totals", headers=wrong)
            assert refused.status_code == 401 and "needs the operator token" in refused.json()["error"]
    shut = Starlette(routes=sales.routes(writer, lambda: [authority.public_key()], sales.operator_gate(None)))
    url = await nursery.start(http_service.run, shut, "127.0.0.1", 0)
    async with httpx.AsyncClient(base_url=url) as client:
        refused = await client.get("/sales/totals", headers={"authorization": f"Bearer {operator}"})
        assert refused.status_code == 403 and "--operator-token-file" in refused.json()["error"]


def test_a_table_keyed_without_the_store_is_migrated_in_place(tmp_path):
    import sqlite3

    path = tmp_path / "sales.sqlite"
    old = sqlite3.connect(path)
    old.executescript(sales._SQLITE_SCHEMA.replace("PRIMARY KEY (store, device_id", "PRIMARY KEY (device_id"))
    old.execute(f"INSERT INTO sale ({sales._COLUMNS}) VALUES ('S042', 'till-1', ?, 1, 1, 300, 1, ?)",
                ("ab" * 16, stored.pack(_sale("till-1", 1))))
    old.commit()
    old.close()
    store = sales.open_sales(str(path))
    assert store.totals() == (1, 300)  # kept across the migration
    # The same till key in another store is another sale now, not a duplicate of S042's.
    assert store.ingest("S043", [_sale("till-1", 1)]) == (1, 0)
    assert store.ingest("S042", [_sale("till-1", 1)]) == (0, 1)
    store.close()


@pytest.fixture
def restore_logging():
    """seeder's main() points structlog at this test's captured stderr; later tests must not log into it."""
    yield
    structlog.reset_defaults()


def test_cli_imports_skus_and_exports_sales(tmp_path, capsys, restore_logging):
    data = tmp_path / "central"
    (tmp_path / "cat.csv").write_text("code,barcode,name,price_cents,tax_class\nA1,400,Pen,150,S\nB2,401,Ink,99,S\n")
    assert cli.main(["sku", "import", str(tmp_path / "cat.csv"), "--data-dir", str(data)]) == 0
    (tmp_path / "cat2.csv").write_text("code,barcode,name,price_cents,tax_class\nA1,400,Pen,175,S\n")
    assert cli.main(["sku", "import", str(tmp_path / "cat2.csv"), "--data-dir", str(data), "--replace"]) == 0
    catalog = CentralCatalog(str(data / "sku.sqlite"))
    assert catalog.replica.get("400").price_cents == 175 and catalog.replica.get("B2") is None
    assert catalog.replica.entry("B2").deleted  # a tombstone, so replicas that had it delete it too
    assert catalog.page(0)["entries"] == []  # nothing is served before the running seeder signed it
    key = Ed25519PrivateKey.generate()
    assert catalog.sign_pending(key, now_ms=1)[0] == 2
    page = catalog.page(0)  # what a cache starting from nothing pulls: each SKU's latest state, oldest first
    assert [(w[0], w[3], w[6]) for w in page["entries"]] == [("A1", False, 175), ("B2", True, 0)]
    assert page["cursor"] == page["entries"][-1][1] and page["more"] is False
    assert catalog.page(page["cursor"])["entries"] == []
    catalog.close()

    store = sales.open_sales(str(data / "sales.sqlite"))
    store.ingest("S042", [_sale("till-1", 1)])
    store.close()
    out = tmp_path / "sales.csv"
    assert cli.main(["sales", "export", "--data-dir", str(data), "--format", "csv", "--out", str(out)]) == 0
    assert out.read_text().splitlines()[1].startswith("S042,till-1,")
    (tmp_path / "bad.csv").write_text("code,name\nA1,Pen\n")
    assert cli.main(["sku", "import", str(tmp_path / "bad.csv"), "--data-dir", str(data)]) == 1
    assert "missing column(s) barcode" in capsys.readouterr().err


def test_csv_errors_name_the_line(tmp_path):
    (tmp_path / "c.csv").write_text("code,barcode,name,price_cents,tax_class\nA1,400,Pen,1.50,S\n")
    with pytest.raises(sales.PosswarmError, match="c.csv:2: price_cents '1.50'"):
        read_csv(tmp_path / "c.csv")


def test_the_pos_transaction_id_reaches_the_export(tmp_path):
    store = sales.open_sales(str(tmp_path / "sales.sqlite"))
    with_txn = Sale("till-1", "ab" * 16, 1, 1_700_000_000_000, (Line("SKU1", 1, 300),), 300, (Tender("cash", 300),),
                    txn="POS7-000123")  # fmt: skip
    # Over the wire as the cache sends it (8 items), next to a sale without one (7 items, as older caches send).
    wires = msgpack.unpackb(msgpack.packb([with_txn.to_wire(), _sale("till-1", 2).to_wire()]))
    assert [len(w) for w in wires] == [8, 7]
    store.ingest("S042", [Sale.from_wire(w) for w in wires])
    out = io.StringIO()
    sales.export(store, out, "jsonl")
    assert [json.loads(line)["txn"] for line in out.getvalue().splitlines()] == ["POS7-000123", None]
    out = io.StringIO()
    sales.export(store, out, "csv")
    assert [r["txn"] for r in csv.DictReader(io.StringIO(out.getvalue()))] == ["POS7-000123", ""]
    store.close()
