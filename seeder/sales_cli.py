"""``posswarm-seeder sales export``: every sale central holds, as JSONL or CSV, for the retail data platform;
``sales totals``: what a running seeder holds, asked with the operator token; ``sales stream``: its sales as a
resumable stream, from a cursor kept in a file."""

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
    _operator_args(actions.add_parser("totals", help="how many sales, and their cents, a running seeder holds"))
    st = actions.add_parser("stream", help="every sale after the cursor in --cursor-file, as JSONL on stdout "
                            "(the export's lines, each with its cursor); the cursor is committed after each page")
    _operator_args(st)
    st.add_argument("--cursor-file", required=True, type=Path,
                    help="where the consumer's cursor is kept (created at the first page; absent: from the first sale)")
    st.add_argument("--limit", type=int, default=1000, help="sales a page (1-10000; default: 1000)")
    st.add_argument("--follow", action="store_true",
                    help="keep polling for new sales (and ride out central's restarts) instead of stopping at the end")
    st.add_argument("--poll-s", type=float, default=2.0, help="with --follow: wait between polls at the end (default: 2)")


def _operator_args(parser) -> None:
    parser.add_argument("--central", required=True, help="the seeder's URL, e.g. https://central:8080")
    parser.add_argument("--operator-token-file", required=True, type=Path,
                        help="the file the seeder was started with (serve --operator-token-file)")
    parser.add_argument("--central-ca", type=Path, default=None,
                        help="the CA the seeder's HTTPS certificate chains to (KEYS/enrolment-ca.crt; default: the "
                        "system's)")


def _operator_request(args, path: str, what: str):
    """The URL, the TLS verification and the headers of an operator request to central."""
    from posswarm.central_url import verify_for
    from posswarm.operator_gate import read_token

    url = f"{args.central.rstrip('/')}{path}"
    return url, verify_for(url, args.central_ca, what=what), {"authorization": f"Bearer {read_token(args.operator_token_file)}"}


def _stream(args) -> int:
    import httpx

    from posswarm.errors import PosswarmError
    from seeder.sales_consumer import consume, sole_consumer
    from seeder.sales_stream import MAX_LIMIT

    if not 1 <= args.limit <= MAX_LIMIT or args.poll_s <= 0:
        raise PosswarmError(f"sales stream: --limit {args.limit} / --poll-s {args.poll_s}: want a limit of 1 to "
                            f"{MAX_LIMIT} and a poll above 0 s")
    url, verify, headers = _operator_request(args, "/sales/stream", "sales stream")
    try:
        with sole_consumer(args.cursor_file), httpx.Client(timeout=60.0, verify=verify) as client:
            count = consume(client, url, headers, args.cursor_file, sys.stdout, limit=args.limit, follow=args.follow,
                            poll_s=args.poll_s)
    except BrokenPipeError:  # the reader went away (`| head`): the page it missed was not committed
        raise PosswarmError(f"sales stream: the output was closed; {args.cursor_file} stays at the last page "
                            "written whole") from None
    print(f"streamed {count} sales", file=sys.stderr)
    return 0


def _totals(args) -> int:
    import httpx

    from posswarm.errors import PosswarmError

    url, verify, headers = _operator_request(args, "/sales/totals", "sales totals")
    try:
        with httpx.Client(timeout=30.0, verify=verify) as client:
            response = client.get(url, headers=headers)
    except httpx.HTTPError as exc:
        raise PosswarmError(f"sales totals from {url}: {type(exc).__name__} ({exc}); is the seeder running?") from None
    try:
        doc = response.json()
    except ValueError:
        raise PosswarmError(f"sales totals from {url}: HTTP {response.status_code}, not JSON; is this a posswarm "
                            "seeder?") from None
    if response.status_code != 200 or not isinstance(doc, dict):
        reason = doc.get("error", doc) if isinstance(doc, dict) else doc
        raise PosswarmError(f"sales totals from {url}: refused (HTTP {response.status_code}: {str(reason)[:300]})")
    print(f"{doc['sales']} sales, {doc['cents']} cents")
    return 0


def run(args) -> int:
    if args.action == "totals":
        return _totals(args)
    if args.action == "stream":
        return _stream(args)
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
