"""``posswarm-seeder sales export``: every sale central holds, as JSONL or CSV, for the retail data platform."""

from __future__ import annotations

import sys
from pathlib import Path

from seeder.sales import export, open_sales


def add_command(sub) -> None:
    sales = sub.add_parser("sales", help="central's sales store")
    actions = sales.add_subparsers(dest="action", required=True)
    ex = actions.add_parser("export", help="write every sale as JSONL (one sale a line) or CSV (one basket line a row)")
    where = ex.add_mutually_exclusive_group(required=True)
    where.add_argument("--data-dir", type=Path, help="the seeder's --data-dir (reads DATA_DIR/sales.sqlite)")
    where.add_argument("--sales-db", help="SQLite path or postgresql://... URL")
    ex.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    ex.add_argument("--out", type=Path, default=None, help="output file (default: stdout)")


def run(args) -> int:
    store = open_sales(args.sales_db or str(args.data_dir / "sales.sqlite"))
    try:
        if args.out is None:
            count = export(store, sys.stdout, args.format)
        else:
            tmp = args.out.with_name(args.out.name + ".part")
            with open(tmp, "w", newline="", encoding="utf-8") as out:
                count = export(store, out, args.format)
            tmp.replace(args.out)  # a half-written export is never mistaken for a whole one
        print(f"exported {count} sales", file=sys.stderr)
    finally:
        store.close()
    return 0
