"""Central's SKU catalog in one real PostgreSQL shared by two seeders (and the import CLI): one stamp order, one
signer at a time, and the same cursor meaning the same thing on either seeder."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from posswarm.errors import PosswarmError
from posswarm.keys import KeyRing, generate_keypair, key_id, load_private_key
from posswarm.sku import snapshot
from posswarm.sku.catalog import SkuReplica
from posswarm.sku.entry import SkuEntry
from posswarm.sku.signature import SkuSignatures
from seeder import cli, sku
from seeder.sku_postgres import STAMP_LOCK, PostgresCatalog
from tests.seeder.test_sales_stream import postgres  # noqa: F401  (a real PostgreSQL server, one per module)

KEY = Ed25519PrivateKey.generate()
NOW = 1_790_000_000_000


@pytest.fixture
def sku_db(postgres, request):  # noqa: F811
    import psycopg

    name = "sku_" + request.node.name.removeprefix("test_")[:50]
    with psycopg.connect(postgres, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    return postgres.rsplit("/", 1)[0] + "/" + name


def _rows(prices: dict[str, int]) -> list[dict]:
    return [{"code": code, "barcode": "", "name": f"item {code}", "price_cents": price, "tax_class": "A",
             "deleted": False, "line": n} for n, (code, price) in enumerate(prices.items(), 2)]


def _sign_all(catalog: PostgresCatalog) -> int:
    signed, after = 0, 0
    while True:
        n, after = catalog.sign_pending(KEY, after_hlc=after, now_ms=NOW, limit=500)
        signed += n
        if n < 500:
            return signed


def _pull(replica: SkuReplica, catalog, cursor: int) -> int:
    """A store cache's pull: pages after its cursor, every entry's signature checked, until none is waiting."""
    checks = SkuSignatures(KeyRing([KEY.public_key()]))
    while True:
        page = catalog.page(cursor, limit=2)
        entries = [SkuEntry.from_wire(wire) for wire in page["entries"]]
        replica.apply(entries, check=lambda newer: checks.accepted(newer, source="central"))
        cursor = page["cursor"]
        if not page["more"]:
            return cursor


def test_an_import_through_one_seeder_is_paged_through_the_other_with_the_same_cursor(sku_db, tmp_path):
    a, b = sku.open_catalog(sku_db), sku.open_catalog(sku_db)
    try:
        assert a.import_rows(_rows({"A1": 100, "A2": 200, "A3": 300}), now_ms=NOW)["changed"] == 3
        assert a.page(0)["entries"] == []  # nothing served before it is signed
        assert b.take_signer_turn()
        assert _sign_all(b) == 3
        cache = SkuReplica(str(tmp_path / "cache.sqlite"))
        # Half the catalog from seeder A, the rest from seeder B with A's cursor: nothing twice, nothing missed.
        first = a.page(0, limit=2)
        cache.apply([SkuEntry.from_wire(w) for w in first["entries"]])
        rest = b.page(first["cursor"], limit=2)
        assert [w[0] for w in first["entries"] + rest["entries"]] == ["A1", "A2", "A3"] and not rest["more"]
        cache.apply([SkuEntry.from_wire(w) for w in rest["entries"]])
        cursor = rest["cursor"]
        # A price change through B, signed by B: the long poll's look through A sees it, and A pages it.
        b.import_rows(_rows({"A2": 250}), now_ms=NOW)
        assert a.newest_signed() == cursor
        _sign_all(b)
        assert a.newest_signed() > cursor
        assert _pull(cache, a, cursor) == b.newest_signed()
        assert cache.entry("A2").price_cents == 250 and len(cache) == 3
        # The snapshot B signed is served by A too, with A's pages, and vouches for A's buckets.
        made = b.take_snapshot(KEY)
        served = snapshot.Snapshot.from_wire(a.page(0)["snapshot"])
        assert served == made and snapshot.problem(served, KeyRing([KEY.public_key()])) is None
        whole, start = [], 0
        while start is not None:
            page = a.bucket_page(start, served.watermark, limit=2)
            whole += [SkuEntry.from_wire(w) for w in page["entries"]]
            start = page["next"]
        good, mismatched = snapshot.vouched(served, whole)
        assert len(good) == 3 and mismatched == []
    finally:
        a.close()
        b.close()


def test_codes_sort_by_bytes_whatever_the_database_locale(sku_db):
    """The snapshot hashes each bucket in code order; a till checks it in Python's (byte) order."""
    catalog = PostgresCatalog(sku_db)
    try:
        codes = {f"{prefix}{n}": 100 for n in range(200) for prefix in ("a", "B", "_", "é", "Z")}
        catalog.import_rows(_rows(codes), now_ms=NOW)
        assert catalog.take_signer_turn()
        _sign_all(catalog)
        made = catalog.take_snapshot(KEY)
        page, whole = catalog.bucket_page(0, made.watermark, limit=10**6), []
        whole = [SkuEntry.from_wire(w) for w in page["entries"]]
        assert page["next"] is None and len(whole) == len(codes)
        assert snapshot.vouched(made, whole)[1] == []
    finally:
        catalog.close()


def test_only_one_seeder_signs_and_the_other_cannot(sku_db):
    a, b = PostgresCatalog(sku_db), PostgresCatalog(sku_db)
    try:
        a.import_rows(_rows({"S1": 1}), now_ms=NOW)
        assert a.take_signer_turn() and a.take_signer_turn()  # held: asking again keeps it
        assert not b.take_signer_turn()
        with pytest.raises(PosswarmError, match="does not hold the signer's turn"):
            b.sign_pending(KEY, now_ms=NOW)
        with pytest.raises(PosswarmError, match="does not hold the signer's turn"):
            b.take_snapshot(KEY)
        assert _sign_all(a) == 1
        a.drop_signer_turn()  # handed over: the other takes it at once
        assert b.take_signer_turn() and not a.take_signer_turn()
    finally:
        a.close()
        b.close()


def test_a_stamping_transaction_waits_for_the_stamp_lock_and_stamps_above_its_holder(sku_db):
    """The CLI importing while the other seeder's signer stamps: the import waits, and stamps above what it commits."""
    import psycopg

    catalog = PostgresCatalog(sku_db)
    catalog.import_rows(_rows({"H1": 1}), now_ms=NOW)
    done: list[dict] = []
    with psycopg.connect(sku_db) as holder, psycopg.connect(sku_db, autocommit=True) as watcher:
        holder.execute("SELECT pg_advisory_xact_lock(%s)", (STAMP_LOCK,))
        ahead = NOW * 2**16 + 10**9  # what the holder stamps, far above the newest stamp the import can see now
        holder.execute("UPDATE sku SET hlc = %s WHERE code = 'H1'", (ahead,))
        importing = threading.Thread(target=lambda: done.append(catalog.import_rows(_rows({"H2": 2}), now_ms=NOW)))
        importing.start()
        waiting = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        deadline = time.monotonic() + 10
        while watcher.execute(waiting).fetchone()[0] == 0:
            assert time.monotonic() < deadline, "the import did not wait for the stamp lock"
            time.sleep(0.01)
        assert done == []
        holder.commit()
    importing.join(10)
    try:
        assert done and done[0]["changed"] == 1
        with psycopg.connect(sku_db) as db:
            assert db.execute("SELECT hlc FROM sku WHERE code = 'H2'").fetchone()[0] == ahead + 1
    finally:
        catalog.close()


_HOLDER = """
import sys, time
from seeder.sku_postgres import STAMP_LOCK, PostgresCatalog
catalog = PostgresCatalog(sys.argv[1])
assert catalog.take_signer_turn()
print("signing", flush=True)
time.sleep(600)
"""


async def test_the_waiting_signer_takes_over_when_the_signing_seeder_is_killed(sku_db):
    survivor = PostgresCatalog(sku_db)
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, sku_db], stdout=subprocess.PIPE, text=True)
    try:
        with trio.fail_after(30):
            assert await trio.to_thread.run_sync(holder.stdout.readline) == "signing\n"
        survivor.import_rows(_rows({"K1": 10}), now_ms=NOW)
        assert not survivor.take_signer_turn()
        holder.kill()  # SIGKILL: no clean stop; its connection closes with the process and the lock with it
        killed_at = trio.current_time()
        with trio.fail_after(10):
            while not await trio.to_thread.run_sync(survivor.take_signer_turn):
                await trio.sleep(sku.SIGNER_RETRY_S)
        took_s = trio.current_time() - killed_at
        print(f"signer's turn taken over {took_s:.2f} s after the kill")
        assert _sign_all(survivor) == 1 and survivor.page(0)["entries"][0][0] == "K1"
    finally:
        holder.kill()
        holder.wait()
        survivor.close()


def test_concurrent_imports_and_signing_never_stamp_two_entries_alike(sku_db):
    import psycopg

    writers = [PostgresCatalog(sku_db) for _ in range(4)]
    signer = PostgresCatalog(sku_db)
    assert signer.take_signer_turn()
    failures: list[BaseException] = []

    def imports(n: int) -> None:
        try:
            for round_ in range(10):  # the same wall clock for all: only the lock keeps their stamps apart
                writers[n].import_rows(_rows({f"W{n}-{round_}-{i}": i for i in range(30)}), now_ms=NOW)
        except BaseException as exc:  # noqa: BLE001 (reported below, in the test's thread)
            failures.append(exc)

    threads = [threading.Thread(target=imports, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    signed = 0
    while any(t.is_alive() for t in threads):
        signed += signer.sign_pending(KEY, now_ms=NOW, limit=50)[0]
    for thread in threads:
        thread.join()
    _sign_all(signer)
    try:
        assert failures == []
        with psycopg.connect(sku_db) as db:
            total, distinct, unsigned = db.execute(
                "SELECT count(*), count(DISTINCT hlc), count(*) FILTER (WHERE signature = ''::bytea) FROM sku").fetchone()
        assert (total, distinct, unsigned) == (4 * 10 * 30, 4 * 10 * 30, 0)
        # Paged in stamp order from 0, every entry once.
        cache, cursor = [], 0
        while True:
            page = writers[0].page(cursor, limit=97)
            cache += [w[0] for w in page["entries"]]
            cursor = page["cursor"]
            if not page["more"]:
                break
        assert len(cache) == len(set(cache)) == total
    finally:
        for catalog in (*writers, signer):
            catalog.close()


async def test_the_long_poll_on_one_seeder_wakes_for_a_change_the_other_signed(sku_db):
    a, b = PostgresCatalog(sku_db), PostgresCatalog(sku_db)
    try:
        newest = sku._Newest(a)
        async with trio.open_nursery() as nursery:
            woke = trio.Event()

            async def poll() -> None:
                await newest.past(0)
                woke.set()

            nursery.start_soon(poll)
            await trio.sleep(3 * sku.WATCH_S)  # looked a few times: nothing signed yet
            assert not woke.is_set()
            assert b.take_signer_turn()
            b.import_rows(_rows({"L1": 5}), now_ms=NOW)
            _sign_all(b)
            with trio.fail_after(5):
                await woke.wait()
        assert newest.stamp == b.newest_signed() > 0
    finally:
        a.close()
        b.close()


def test_the_import_cli_writes_to_the_shared_catalog(sku_db, tmp_path, capsys):
    csv = tmp_path / "cat.csv"
    csv.write_text("code,barcode,name,price_cents,tax_class\nC1,,one,100,A\nC2,,two,200,A\n")
    assert cli.main(["sku", "import", str(csv), "--sku-db", sku_db]) == 0
    assert "2 changed" in capsys.readouterr().out
    csv.write_text("code,barcode,name,price_cents,tax_class\nC2,,two,210,A\n")
    assert cli.main(["sku", "import", str(csv), "--sku-db", sku_db, "--replace"]) == 0
    assert "1 rows, 2 changed (1 deleted as missing), 2 SKUs" in capsys.readouterr().out
    catalog = PostgresCatalog(sku_db)
    try:
        assert catalog.take_signer_turn() and _sign_all(catalog) == 2
        wires = {w[0]: w for w in catalog.page(0)["entries"]}
        assert wires["C1"][3] is True and wires["C2"][6] == 210
    finally:
        catalog.close()
    assert cli.main(["sku", "import", str(csv)]) == 1
    assert "name the catalog" in capsys.readouterr().err


def test_an_unreachable_sku_db_is_one_line_naming_it():
    with pytest.raises(PosswarmError, match=r"sku db postgresql://\*\*\*@127.0.0.1:9/x: .*check the URL and server"):
        PostgresCatalog("postgresql://user:secret@127.0.0.1:9/x")


async def test_two_seeders_signing_loops_sign_once_and_the_survivor_takes_over(sku_db, tmp_path):
    private, _ = generate_keypair(tmp_path, "sku")
    key = load_private_key(private)
    a, b = PostgresCatalog(sku_db), PostgresCatalog(sku_db)
    cli_catalog = PostgresCatalog(sku_db)  # `sku import`, its own connection
    try:
        async with trio.open_nursery() as nursery:
            scopes, stopped = {}, {}
            for name, catalog in (("a", a), ("b", b)):
                scopes[name], stopped[name] = trio.CancelScope(), trio.Event()

                async def signing(catalog=catalog, scope=scopes[name], done=stopped[name]) -> None:
                    try:
                        with scope:
                            await sku.sign_forever(catalog, private)
                    finally:
                        done.set()

                nursery.start_soon(signing)
            cli_catalog.import_rows(_rows({"T1": 100}), now_ms=NOW)
            with trio.fail_after(10):
                while b.newest_signed() == 0:
                    await trio.sleep(sku.WATCH_S)
                # the signer also stores a snapshot; both seeders serve it
                while a.page(0)["snapshot"] is None or b.page(0)["snapshot"] is None:
                    await trio.sleep(sku.WATCH_S)
            signing, waiting = ("a", "b") if a._turn else ("b", "a")
            catalogs = {"a": a, "b": b}
            assert not catalogs[waiting]._turn
            first = b.page(0)["entries"]
            assert [w[0] for w in first] == ["T1"] and first[0][8] == key_id(key.public_key())
            # The signing seeder dies: its loop stops and its connection closes (PostgreSQL frees the lock).
            scopes[signing].cancel()
            with trio.fail_after(10):
                await stopped[signing].wait()
            catalogs[signing].close()
            cursor = b.newest_signed()
            cli_catalog.import_rows(_rows({"T1": 90}), now_ms=NOW)
            with trio.fail_after(10):
                while catalogs[waiting].newest_signed() <= cursor:
                    await trio.sleep(sku.WATCH_S)
            assert catalogs[waiting]._turn
            change = catalogs[waiting].page(cursor)["entries"]
            assert [(w[0], w[6]) for w in change] == [("T1", 90)]
            scopes[waiting].cancel()
    finally:
        for catalog in (a, b, cli_catalog):
            catalog.close()


def test_an_empty_whole_catalog_file_deletes_every_sku(sku_db):
    catalog = PostgresCatalog(sku_db)
    try:
        catalog.import_rows(_rows({"E1": 1, "E2": 2}), now_ms=NOW)
        assert catalog.import_rows([], replace=True, now_ms=NOW) == {"rows": 0, "changed": 2, "tombstoned_missing": 2,
                                                                      "skus": 2}
        assert catalog.import_rows([], replace=True, now_ms=NOW)["changed"] == 0  # tombstones stay, once
    finally:
        catalog.close()


def test_connections_the_server_dropped_are_one_line_and_made_again(sku_db):
    """A PostgreSQL restart or failover, as the seeder sees it: its connections cut by the server."""
    import psycopg

    catalog = PostgresCatalog(sku_db)
    try:
        catalog.import_rows(_rows({"R1": 1}), now_ms=NOW)
        assert catalog.take_signer_turn() and _sign_all(catalog) == 1
        with psycopg.connect(sku_db, autocommit=True) as admin:
            cut = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = "
                                "current_database() AND pid <> pg_backend_pid()").fetchone()[0]
        assert cut == 2  # the routes' connection and the signer's
        with pytest.raises(PosswarmError, match=r"reading changes failed .*; retried, check the server"):
            catalog.page(0)
        assert [w[0] for w in catalog.page(0)["entries"]] == ["R1"]  # connected again
        with pytest.raises(PosswarmError):
            catalog.sign_pending(KEY, now_ms=NOW)  # the turn went with the connection
        with pytest.raises(PosswarmError, match="does not hold the signer's turn"):
            catalog.sign_pending(KEY, now_ms=NOW)
        assert catalog.take_signer_turn()  # a new connection, the lock taken again
        catalog.import_rows(_rows({"R1": 2}), now_ms=NOW)
        assert _sign_all(catalog) == 1
    finally:
        catalog.close()
