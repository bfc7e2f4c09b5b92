"""``posswarm-bench sales-ingest``: thousands of store caches forwarding sales at once into one central.

Central is a real ``posswarm-seeder serve`` with its sales in SQLite (the default) or in a real
PostgreSQL server (``--db postgresql``: a throwaway one, durable, fsync on). Each simulated store
cache is a trio task with its own HTTP connection that hands its batches over with the cache's own
forwarding call (posswarm.storedata.central.post_sales), retrying as the cache does: ``--batch`` at a
time as fast as central answers, or (``--rate``) its share of the sales as they are made. Afterwards
central's export (``posswarm-seeder sales export``) is held against every sale sent, by transaction
id: none may be lost, stored twice or unknown. Then one store's backlog of a day is drained alone,
as its cache does after an outage. Prints ``{sales_per_s, batch_p99_ms, lost, duplicated, ...}``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import random
import secrets
import ssl
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from functools import partial
from pathlib import Path

import httpx
import trio
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from posswarm.errors import PosswarmError
from posswarm.identity.certificate import verify
from posswarm.identity.credential import Credential
from posswarm.identity.tls import central_context
from posswarm.sales.model import Line, Sale, Tender
from posswarm.storedata import central
from posswarm.storedata.cache import BACKOFF_FIRST_S, BACKOFF_MAX_S, FORWARD_BATCH, FORWARD_GATHER_S, forward_pause
from seeder.enrolment import certify
from seeder.keys_cli import CentralKeys
from tools.bench import print_result
from tools.bench_control_plane import _cpu_seconds
from tools.pg_server import throwaway_postgres
from tools.sales_rig import Rig, percentile
from tools.sales_verdict import Attempted, exactly_once, verdict

FD_LIMIT = 65536  # each cache holds a connection, and central one per cache
BACKLOG_TILLS = 40
BACKLOG_SALES_PER_TILL = 600  # a busy lane's day (assumed: 600 baskets in a 14-hour day)


def _sales(store: str, tills: int, per_till: int, rng: random.Random) -> list[Sale]:
    """One store's sales, each with the POS transaction id the export is checked by."""
    made, created = [], int(time.time() * 1000)
    for t in range(1, tills + 1):
        device, incarnation = f"{store}-till-{t:02d}", secrets.token_hex(16)
        for seq in range(1, per_till + 1):
            qty, cents = rng.randint(1, 3), rng.randint(50, 5000)
            made.append(Sale(device, incarnation, seq, created + seq, (Line(f"SKU{rng.randint(1, 9999):05d}", qty, cents),),
                             qty * cents, (Tender("card", qty * cents),), txn=f"{device}-{seq:06d}"))
    return made


def _attempted(sales: list[Sale]) -> dict[str, Attempted]:
    return {sale.txn: Attempted(sale.device_id, sale.to_json(), True, 1) for sale in sales}


def _cache_credential(keys: CentralKeys, store: str) -> Credential:
    """A store cache's credential, issued by central's enrolment key as `posswarm-seeder enroll` would (in memory)."""
    key = Ed25519PrivateKey.generate()
    pem, authority = certify(keys.dir, key.public_key(), node_id=f"cache-{store}", store=store, role="cache",
                             device_class="cache")
    authorities = (x509.load_pem_x509_certificate(authority).public_key(),)
    certificate = x509.load_pem_x509_certificate(pem)
    identity = verify(certificate, list(authorities), now=datetime.datetime.now(datetime.UTC))
    return Credential(keys.dir, key, certificate, identity, authorities)


async def _forward(url: str, store: str, sales: list[Sale], batch: int, latencies: list[float], stats: dict,
                   go: trio.Event, tls: ssl.SSLContext, credential: Credential, *,
                   connected: Callable[[], None] | None = None, per_s: float = 0.0, pace: bool = True,
                   ages: list[float] | None = None) -> None:
    """One store cache: its own connection, batch after batch, each signed with the cache's key and retried with
    the cache's backoff until central answers. With ``connected``, it connects first and says so. With
    ``per_s``, its sales are made at that rate and forwarded as the cache does: what is there, up to a batch of
    FORWARD_BATCH, after an idle wait FORWARD_GATHER_S for a burst to join, and (``pace``) after each answer the
    cache's forward_pause; each sale's ms from made to answered goes into ``ages``. Otherwise ``batch`` at a time."""
    # one TLS context for all: httpx builds one per client otherwise (~30 ms of CPU each, minutes for a thousand)
    async with httpx.AsyncClient(timeout=60.0, limits=httpx.Limits(max_connections=1), verify=tls) as client:
        if connected is not None:  # an empty batch: TLS handshake and credential check, before the clock starts
            await _hand_over(client, url, store, [], credential, stats)
            connected()
        await go.wait()
        begun, sent = trio.current_time() - random.random() / (per_s or 1), 0  # caches out of step, as in a chain
        while sent < len(sales):
            end = sent + batch
            if per_s:
                made = min(len(sales), int((trio.current_time() - begun) * per_s))
                if made <= sent:
                    await trio.sleep_until(begun + (sent + 1) / per_s)
                    await trio.sleep(FORWARD_GATHER_S)
                    continue
                end = min(made, sent + FORWARD_BATCH)
            took_ms = await _hand_over(client, url, store, sales[sent:end], credential, stats)
            latencies.append(took_ms)
            if per_s:
                answered = trio.current_time()
                if ages is not None:  # sale k (from 0) was made when the count made reached k + 1
                    ages.extend((answered - begun - (k + 1) / per_s) * 1000 for k in range(sent, end))
                if pace:
                    await trio.sleep(forward_pause(took_ms / 1000, end - sent, random.random()))
            sent = end


async def _hand_over(client: httpx.AsyncClient, url: str, store: str, sales: list[Sale], credential: Credential,
                     stats: dict) -> float:
    """One batch, retried with the cache's backoff until central answers; the ms its answered attempt took."""
    backoff = BACKOFF_FIRST_S
    while True:
        sent = time.monotonic()
        try:
            await central.post_sales(client, url, store, sales, credential)
            return (time.monotonic() - sent) * 1000
        except PosswarmError as exc:
            stats["retries"] += 1
            stats["last_error"] = str(exc)[:200]
            await trio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)


async def run_ingest(root: Path, *, caches: int = 1000, tills: int = 4, sales_per_till: int = 25, batch: int = 100,
                     sales_db: str = "", backlog: bool = True, seed: int | None = None, rate: float = 0.0,
                     pace: bool = True) -> dict:
    """Every cache at once (``rate``: making that many sales a second between them, forwarding as they are made,
    paced by central's answers unless not ``pace``), then (``backlog``) one 40-till store's day alone; the verdict
    covers both."""
    rng = random.Random(seed)
    rig = Rig(root, 0, fd_limit=FD_LIMIT)
    stores = {f"S{i:05d}": _sales(f"S{i:05d}", tills, sales_per_till, rng) for i in range(1, caches + 1)}
    day = _sales("S-BACKLOG", BACKLOG_TILLS, BACKLOG_SALES_PER_TILL, rng) if backlog else []
    latencies: list[float] = []
    ages: list[float] = []  # rate runs: each sale's ms from made to central's answer
    stats = {"retries": 0, "last_error": None}
    try:
        url = await rig.start_central(sales_db)
        tls = central_context(rig.central_keys.authority)
        credentials = {store: _cache_credential(rig.central_keys, store) for store in [*stores, "S-BACKLOG"]}
        go, all_connected, waiting = trio.Event(), trio.Event(), [len(stores)]

        def one_connected() -> None:
            waiting[0] -= 1
            if not waiting[0]:
                all_connected.set()

        async with trio.open_nursery() as nursery:
            started = time.monotonic()
            for store, sales in stores.items():
                nursery.start_soon(partial(_forward, url, store, sales, batch, latencies, stats, go, tls,
                                           credentials[store], connected=one_connected, per_s=rate / caches,
                                           pace=pace, ages=ages))
            await all_connected.wait()
            connect_s, connect_retries, stats["retries"] = time.monotonic() - started, stats["retries"], 0
            central_pid = rig.procs["seeder"].process.pid
            started, central_cpu, caches_cpu = time.monotonic(), _cpu_seconds(central_pid), time.process_time()
            load_average = [os.getloadavg()[0]]
            go.set()  # every cache at once, connected as a cache in service is, the clock running from here
        load_s = time.monotonic() - started
        load_average.append(os.getloadavg()[0])
        central_cpu, caches_cpu = _cpu_seconds(central_pid) - central_cpu, time.process_time() - caches_cpu
        drain_s = None
        if day:
            go_now = trio.Event()
            go_now.set()
            started = time.monotonic()
            await _forward(url, "S-BACKLOG", day, FORWARD_BATCH, [], stats, go_now, tls, credentials["S-BACKLOG"])
            drain_s = time.monotonic() - started
        exported = await rig.export(sales_db)
    finally:
        with trio.CancelScope(shield=True):
            await rig.stop_all()
    sent = [sale for sales in stores.values() for sale in sales] + day
    found = verdict(_attempted(sent), exported)
    total = len(sent) - len(day)
    return {
        "backend": "postgresql" if sales_db.startswith("postgres") else "sqlite",
        "caches": caches, "sales": total, "rate": rate or None, "batch": None if rate else batch,
        "batches": len(latencies),
        "connect_s": round(connect_s, 2), "connect_retries": connect_retries, "load_s": round(load_s, 2), "sales_per_s": round(total / load_s),
        "batch_p50_ms": percentile([round(ms) for ms in latencies], 50),
        "batch_p99_ms": percentile([round(ms) for ms in latencies], 99),
        # --rate: from the moment each sale was made until central answered the batch holding it
        "sale_p50_ms": percentile([round(ms) for ms in ages], 50) if ages else None,
        "sale_p99_ms": percentile([round(ms) for ms in ages], 99) if ages else None,
        "paced": pace if rate else None,
        # CPU per sale whatever the machine's load: central's process, and this one (every simulated cache)
        "central_cpu_us_per_sale": round(central_cpu / total * 1e6, 1),
        "central_cpu_share": round(central_cpu / load_s, 2),  # of one core, while the load ran
        "caches_cpu_us_per_sale": round(caches_cpu / total * 1e6, 1),
        "caches_cpu_share": round(caches_cpu / load_s, 2),  # what the load generator itself took of a core
        # the machine's 1-minute load average as the load began and ended: what central shared the cores with
        "load_average": "/".join(f"{value:.1f}" for value in load_average),
        "backlog_sales": len(day), "backlog_drain_s": None if drain_s is None else round(drain_s, 2),
        **{k: found[k] for k in ("stored", "lost", "duplicated", "phantom", "wrong_total", "examples")},
        **stats,
    }


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="posswarm-bench sales-ingest", description=__doc__.splitlines()[0])
    p.add_argument("--caches", type=int, default=1000, help="store caches forwarding at once")
    p.add_argument("--tills", type=int, default=4, help="tills per store")
    p.add_argument("--sales-per-till", type=int, default=25)
    p.add_argument("--batch", type=int, default=100, help="sales per request (a cache sends up to 500)")
    p.add_argument("--rate", type=float, default=0.0, help="sales/s made across all caches and forwarded as made, "
                   "as caches do (default: every cache sends --batch after --batch, as fast as central answers)")
    p.add_argument("--no-pace", action="store_true", help="with --rate: send again as soon as central answers, "
                   "as caches did before they paced themselves by central's answer time")
    p.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    p.add_argument("--no-backlog", action="store_true", help="skip draining one 40-till store's day")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--keep", type=Path, default=None, help="work in this (new) directory and keep logs and files")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    for flag, value, low in (("--caches", args.caches, 1), ("--tills", args.tills, 1),
                             ("--sales-per-till", args.sales_per_till, 1), ("--batch", args.batch, 1),
                             ("--rate", args.rate, 0)):
        if value < low:
            print(f"posswarm-bench sales-ingest: {flag} {value}: must be at least {low}", file=sys.stderr)
            return 2
    try:
        with tempfile.TemporaryDirectory(prefix="posswarm-bench-ingest-") as tmp, ExitStack() as stack:
            sales_db = stack.enter_context(throwaway_postgres()) if args.db == "postgresql" else ""
            result = trio.run(lambda: run_ingest(
                args.keep or Path(tmp), caches=args.caches, tills=args.tills, sales_per_till=args.sales_per_till,
                batch=args.batch, sales_db=sales_db, backlog=not args.no_backlog, seed=args.seed, rate=args.rate,
                pace=not args.no_pace))
    except PosswarmError as exc:
        print(f"posswarm-bench sales-ingest: {exc}", file=sys.stderr)
        return 1
    print_result(result, args.json)
    if not exactly_once(result):
        print("posswarm-bench sales-ingest: FAILED: central's export does not hold every sale sent exactly once",
              file=sys.stderr)
        return 1
    return 0
