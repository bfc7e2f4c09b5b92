"""``posswarm-stats``: read the tracker's /stats and show per-store progress and WAN/LAN bytes (WAN× = WAN bytes / release size)."""

from __future__ import annotations

import argparse
import json
import sys

import httpx
from rich import box
from rich.console import Console
from rich.table import Table


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line and exit 2, not argparse's usage block
        raise _UsageError(message)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``posswarm-stats``; returns the exit status."""
    p = _Parser(prog="posswarm-stats", description="per-store release progress and WAN-once figures from a tracker")
    p.add_argument("--tracker", required=True, help="tracker base URL, e.g. http://tracker:6969")
    p.add_argument("--release", help="only this release (NAME@VERSION, or an info-hash in hex)")
    p.add_argument("--store", help="only this store")
    p.add_argument("--json", action="store_true", help="print the raw /stats JSON")
    try:
        args = p.parse_args(argv)
    except _UsageError as exc:
        print(f"posswarm-stats: {exc}", file=sys.stderr)
        return 2
    base = args.tracker.rstrip("/").removesuffix("/announce")
    params = {k: v for k, v in {"release": args.release, "store": args.store}.items() if v}
    try:
        response = httpx.get(f"{base}/stats", params=params, timeout=10.0)
        response.raise_for_status()
        doc = response.json()
        releases = doc["releases"]
    except (httpx.TransportError, httpx.InvalidURL, httpx.UnsupportedProtocol):
        print(f"posswarm-stats: cannot reach tracker at {args.tracker} (is posswarm-tracker running?)", file=sys.stderr)
        return 1
    except httpx.HTTPStatusError as exc:
        print(f"posswarm-stats: tracker at {args.tracker} answered HTTP {exc.response.status_code} on /stats (is it a posswarm-tracker?)", file=sys.stderr)
        return 1
    except (ValueError, KeyError, TypeError):
        print(f"posswarm-stats: tracker at {args.tracker} sent /stats that is not posswarm stats JSON (is it a posswarm-tracker?)", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
        return 0
    console = Console()
    if not releases:
        console.print("no releases announced yet")
    for name, release in releases.items():
        console.print(_release_table(name, release))
    return 0


def _release_table(name: str, release: dict) -> Table:
    size = release.get("size")
    table = Table(title=f"{name}  ({_bytes(size) if size else 'size unknown'})", title_justify="left", box=box.SIMPLE_HEAD)
    for column in ("store", "installed", "fetching", "cache", "WAN", "LAN", "WAN×"):
        table.add_column(column, justify="left" if column in ("store", "cache") else "right", no_wrap=True)
    for store, s in release.get("stores", {}).items():
        total, installed = s.get("devices_total", 0), s.get("devices_installed", 0)
        cache = s.get("cache") or {}
        amplification = s.get("wan_amplification")
        table.add_row(
            store,
            f"{installed}/{total} ({100 * installed / total:.0f} %)" if total else "0/0",
            str(s.get("devices_downloading", 0)),
            str(cache.get("state", "?")),
            _bytes(s.get("wan_bytes", 0)),
            _bytes(s.get("lan_bytes", 0)),
            f"{amplification:.2f}" if amplification is not None else "-",
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
