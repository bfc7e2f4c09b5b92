"""``posswarm-bench sales-ingest`` at a small scale: many caches at once into a real central, checked by txn id."""

from __future__ import annotations

import pytest

from tools import bench_docs
from tools.bench_sales_ingest import run_ingest
from tools.pg_server import server_bin, throwaway_postgres
from tools.sales_verdict import exactly_once


def _check(result: dict, caches: int, sales: int) -> None:
    why = str(result)
    assert result["caches"] == caches and result["sales"] == sales and result["batches"] == sales // 5, why
    assert exactly_once(result) and result["stored"] == sales, why
    assert result["sales_per_s"] > 0 and result["batch_p99_ms"] >= result["batch_p50_ms"] > 0, why
    assert result["caches_cpu_share"] > 0 and len(result["load_average"].split("/")) == 2, why


async def test_sixty_caches_at_once_into_sqlite_lose_and_double_nothing(tmp_path):
    result = await run_ingest(tmp_path, caches=60, tills=2, sales_per_till=5, batch=5, backlog=False, seed=3)
    _check(result, 60, 600)
    assert result["backend"] == "sqlite"
    table = bench_docs.markdown(result)  # as `posswarm-bench all` writes it into docs/benchmarks.md
    assert f"| sales_per_s | {result['sales_per_s']:,} |" in table and "| lost | 0 |" in table


async def test_the_same_into_postgresql(tmp_path):
    pytest.importorskip("psycopg")
    if server_bin() is None:
        pytest.skip("PostgreSQL server binaries are not installed (apt-get install postgresql)")
    with throwaway_postgres() as dsn:
        result = await run_ingest(tmp_path, caches=60, tills=2, sales_per_till=5, batch=5, sales_db=dsn,
                                  backlog=False, seed=3)
    _check(result, 60, 600)
    assert result["backend"] == "postgresql"


async def test_caches_forwarding_sales_as_they_are_made_lose_and_double_nothing(tmp_path):
    result = await run_ingest(tmp_path, caches=10, tills=1, sales_per_till=6, rate=30, backlog=False, seed=3)
    why = str(result)
    assert exactly_once(result) and result["stored"] == 60 and result["rate"] == 30, why
    assert result["batch"] is None and 10 <= result["batches"] <= 60, why  # as made: several sales a batch, or one
    # a sale's age runs from when it was made to central's answer for its batch
    assert result["paced"] is True and result["sale_p99_ms"] >= result["sale_p50_ms"] > 0, why
    assert result["sale_p99_ms"] < 60_000, why


async def test_unpaced_caches_still_deliver_every_sale_once(tmp_path):
    result = await run_ingest(tmp_path, caches=10, tills=1, sales_per_till=6, rate=30, backlog=False, seed=3,
                              pace=False)
    assert exactly_once(result) and result["stored"] == 60 and result["paced"] is False, str(result)
    assert result["sale_p50_ms"] is not None and result["batch_p50_ms"] > 0, str(result)
