"""Central's clients in a failover run, each started inside a namespace: a till's POS, and an operator on the dashboard.

``till``: the simulated POS (tools/pos_till.py) on the till's own local API (127.0.0.1 in the till's
namespace), one sale every 1/RATE s into its own ledger, until the stop file appears.
``dashboard``: GET the tracker's /stats through HAProxy with the operator's token every 0.5 s; one line
per poll on stdout (``monotonic status``, or the error instead of a status), the connection new each time, as a browser after a reset.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import httpx
import trio

from tools.pos_ledger import PosLedger
from tools.pos_till import Shop, ring

DASHBOARD_EVERY_S = 0.5
DASHBOARD_TIMEOUT_S = 2.0
STOP_POLL_S = 0.2


async def _till(args: argparse.Namespace) -> None:
    shop = Shop(PosLedger(args.ledger), quota=1 << 30)

    def url_of() -> str | None:
        try:
            return args.api_url_file.read_text().strip() or None
        except OSError:  # the till has not written it yet
            return None

    async def until_stopped() -> None:
        while not args.stop_file.exists():
            await trio.sleep(STOP_POLL_S)
        shop.quota = 0  # the sale in flight is still retried until answered

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(until_stopped)
            await ring(shop, args.name, url_of, args.rate, random.Random(args.name))
            nursery.cancel_scope.cancel()
    finally:
        args.latencies.write_text(json.dumps(shop.latencies_ms))
        shop.ledger.close()


async def _dashboard(args: argparse.Namespace) -> None:
    headers = {"authorization": f"Bearer {args.token_file.read_text().strip()}"}
    no_reuse = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(verify=str(args.ca), timeout=DASHBOARD_TIMEOUT_S, limits=no_reuse) as client:
        while True:
            started = time.monotonic()
            try:
                status = str((await client.get(args.url, headers=headers)).status_code)
            except httpx.HTTPError as exc:
                # the why (one line), to tell the proxy's refusal from the tracker's silence
                status = ": ".join(filter(None, (type(exc).__name__, " ".join(str(exc).split())[:80])))
            print(f"{time.monotonic():.3f} {status}", flush=True)
            await trio.sleep(max(0.0, DASHBOARD_EVERY_S - (time.monotonic() - started)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.netsim.ha_clients", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("till")
    t.add_argument("--name", required=True)
    t.add_argument("--api-url-file", type=Path, required=True)
    t.add_argument("--ledger", type=Path, required=True)
    t.add_argument("--latencies", type=Path, required=True)
    t.add_argument("--stop-file", type=Path, required=True)
    t.add_argument("--rate", type=float, required=True)
    d = sub.add_parser("dashboard")
    d.add_argument("--url", required=True)
    d.add_argument("--ca", type=Path, required=True)
    d.add_argument("--token-file", type=Path, required=True)
    args = p.parse_args(argv)
    try:
        trio.run(_till if args.command == "till" else _dashboard, args)
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
