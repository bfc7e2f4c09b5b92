"""``posswarm-stats``: read the tracker's /stats and show per-store progress, stragglers and WAN amplification."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import httpx
from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from posswarm.errors import PosswarmError
from posswarm.operator_gate import read_token
from tools.store_watch import StoreWatch

TOKEN_FILE_ENV = "POSSWARM_OPERATOR_TOKEN_FILE"  # a file's path, never the token: a command line is world-readable


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line and exit 2, not argparse's usage block
        raise _UsageError(message)


class _Unreadable(Exception):
    """The tracker could not be read; the message is the one line to print."""


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="posswarm-stats", description="per-store release progress and WAN-once figures from a tracker")
    p.add_argument("--tracker", required=True, help="tracker base URL, e.g. http://tracker:6969")
    p.add_argument("--token-file", default=os.environ.get(TOKEN_FILE_ENV),
                   help=f"file with the operator token the tracker was started with (default: ${TOKEN_FILE_ENV})")
    p.add_argument("--release", help="only this release (NAME@VERSION, or an info-hash in hex)")
    p.add_argument("--store", help="only this store")
    p.add_argument("--json", action="store_true", help="print the raw /stats JSON")
    p.add_argument("--watch", action="store_true",
                   help="redraw until Ctrl-C; with --store, a live view of that store's cache and tills")
    p.add_argument("--every", type=float, default=5.0, help="--watch: seconds between redraws (default 5)")
    p.add_argument("--rounds", type=int, help="--watch: stop after this many redraws (default: never)")
    p.add_argument("--fail-if-amplification-above", type=float, metavar="X",
                   help="exit 1 naming the stores whose WAN amplification (WAN bytes / size) is above X")
    p.add_argument("--fail-if-stalled", action="store_true",
                   help="exit 1 naming the stores with stalled devices (no progress or announce for 3 intervals)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``posswarm-stats``; returns the exit status (1 = unreachable or an alert fired)."""
    try:
        args = _parser().parse_args(argv)
        if args.every <= 0 or (args.rounds is not None and args.rounds < 1):
            raise _UsageError("--every must be above 0 and --rounds at least 1")
        args.headers = {"authorization": f"Bearer {read_token(args.token_file, source='--token-file')}"} \
            if args.token_file else {}
    except (_UsageError, PosswarmError) as exc:
        print(f"posswarm-stats: {exc}", file=sys.stderr)
        return 2
    try:
        if args.watch:
            doc = _watch(args)
        else:
            doc = _fetch(args)
            if args.json:
                print(json.dumps(doc, indent=2, sort_keys=True))
            else:
                _console().print(_tables(doc))
    except _Unreadable as exc:
        print(f"posswarm-stats: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    alerts = alerts_of(doc, amplification_above=args.fail_if_amplification_above, stalled=args.fail_if_stalled)
    for line in alerts:
        print(f"posswarm-stats: {line}", file=sys.stderr)
    return 1 if alerts else 0


def alerts_of(doc: dict, *, amplification_above: float | None, stalled: bool) -> list[str]:
    """One line per alert that fired, naming the release and its offending stores."""
    lines = []
    for name, release in doc["releases"].items():
        stores = {k: s for k, s in release["stores"].items() if k != "-"}
        if amplification_above is not None:
            over = [f"{k} ({s['wan_amplification']:.2f})" for k, s in stores.items()
                    if s.get("wan_amplification") is not None and s["wan_amplification"] > amplification_above]
            if over:
                lines.append(f"{name}: WAN amplification above {amplification_above:g} in {', '.join(over)}")
        if stalled:
            stuck = [f"{k} ({', '.join(s.get('stragglers', []))})" for k, s in stores.items()
                     if s.get("devices_stalled")]
            if stuck:
                lines.append(f"{name}: stalled devices in {', '.join(stuck)}")
    return lines


def _watch(args) -> dict:
    # With --store, a top-like view of that store's tills (bars, receive-rate sparklines); else every store's table.
    store = StoreWatch(args.store) if args.store else None

    def draw(doc: dict):
        if store is None:
            return _tables(doc)
        store.update(doc, time.monotonic())
        return store.render()

    doc = _fetch(args)
    with Live(draw(doc), console=_console(), auto_refresh=False) as live:
        rounds = 1
        while args.rounds is None or rounds < args.rounds:
            time.sleep(args.every)
            doc = _fetch(args)
            live.update(draw(doc), refresh=True)
            rounds += 1
    return doc


def _console() -> Console:
    # Piped into a file or a CI log, rich would assume 80 columns and cut the straggler names.
    return Console() if sys.stdout.isatty() else Console(width=160)


def _fetch(args) -> dict:
    base = args.tracker.rstrip("/").removesuffix("/announce")
    params = {k: v for k, v in {"release": args.release, "store": args.store}.items() if v}
    try:
        response = httpx.get(f"{base}/stats", params=params, headers=args.headers, timeout=10.0)
        response.raise_for_status()
        doc = response.json()
        if not isinstance(doc["releases"], dict):
            raise TypeError("releases")
        return doc
    except (httpx.TransportError, httpx.InvalidURL, httpx.UnsupportedProtocol):
        raise _Unreadable(f"cannot reach tracker at {args.tracker} (is posswarm-tracker running?)") from None
    except httpx.HTTPStatusError as exc:
        if exc.response.status_code == 401:
            sent = "refused the operator token" if args.headers else "needs the operator token"
            raise _Unreadable(f"tracker at {args.tracker} {sent} on /stats (HTTP 401): pass --token-file FILE (or "
                              f"set {TOKEN_FILE_ENV}) with the file the tracker was started with "
                              "(--operator-token-file)") from None
        if exc.response.status_code == 429:
            raise _Unreadable(f"tracker at {args.tracker} holds this address after too many wrong operator tokens "
                              f"(HTTP 429): retry in {exc.response.headers.get('retry-after', 'a few')} s with the "
                              "right --token-file") from None
        raise _Unreadable(f"tracker at {args.tracker} answered HTTP {exc.response.status_code} on /stats "
                          "(is it a posswarm-tracker?)") from None
    except (ValueError, KeyError, TypeError):
        raise _Unreadable(f"tracker at {args.tracker} sent /stats that is not posswarm stats JSON "
                          "(is it a posswarm-tracker?)") from None


def _tables(doc: dict) -> Group:
    if not doc["releases"]:
        return Group("no releases announced yet")
    return Group(*(_release_table(name, release) for name, release in doc["releases"].items()))


def _release_table(name: str, release: dict) -> Table:
    size = release.get("size")
    amp = release.get("wan_amplification")
    title = f"{name}  ({_bytes(size) if size else 'size unknown'}; WAN× {amp:.2f})" if amp is not None else (
        f"{name}  ({_bytes(size) if size else 'size unknown'})")
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    for column in ("store", "ring", "installed", "staged", "fetching", "stalled", "cache", "WAN", "LAN", "WAN×",
                   "stragglers"):
        table.add_column(column, justify="left" if column in ("store", "ring", "cache", "stragglers") else "right",
                         no_wrap=column != "stragglers")
    for store, s in release.get("stores", {}).items():
        total, installed = s.get("devices_total", 0), s.get("devices_installed", 0)
        cache = s.get("cache") or {}
        amplification = s.get("wan_amplification")
        stalled = s.get("devices_stalled", 0)
        table.add_row(
            store,
            s.get("ring") or "-",
            f"{installed}/{total} ({100 * installed / total:.0f} %)" if total else "0/0",
            str(s.get("devices_staged", 0)),
            str(s.get("devices_downloading", 0)),
            f"[bold red]{stalled}[/]" if stalled else "0",
            str(cache.get("state", "?")),
            _bytes(s.get("wan_bytes", 0)),
            _bytes(s.get("lan_bytes", 0)),
            f"{amplification:.2f}" if amplification is not None else "-",
            ", ".join(s.get("stragglers", [])) or "-",
        )
    return table


def _bytes(n: int | None) -> str:
    if not n:
        return "0 B"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"
