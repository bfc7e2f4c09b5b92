"""``posswarm-tracker serve``: flags and TOML config in, a running tracker out."""

from __future__ import annotations

import argparse
import gc
import signal
import sys

import trio

from posswarm import logs
from posswarm.errors import PosswarmError
from tracker import config as tracker_config
from tracker import handout, server


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse prints usage + exits; we want one line and exit 2
        raise _UsageError(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="posswarm-tracker", description="BitTorrent tracker (HTTP and UDP) with store-aware peer hand-out and rollout stats")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    s = sub.add_parser("serve", help="answer /announce, /scrape, /stats, /metrics and the dashboard at /")
    s.add_argument("--listen", help="HOST:PORT to listen on (default 127.0.0.1:6969; port 0 = any free port)")
    s.add_argument("--interval", type=int, help="seconds between announces asked of clients (default 30)")
    s.add_argument("--policy", choices=sorted(handout.POLICIES), help="peer hand-out policy (default store-first)")
    s.add_argument("--cross-store", action="store_true", default=None, help="let caches fetch from other stores' caches")
    s.add_argument("--udp", help="HOST:PORT for the BEP 15 UDP tracker too (default: HTTP only)")
    s.add_argument("--open", action="store_true", default=None,
                   help="track any torrent, no passkey (a public tracker; for labs and standard clients)")
    s.add_argument("--catalog", help="private mode: the seeder's catalog URL, e.g. https://seeder:8000/catalog")
    s.add_argument("--catalog-ca", help="CA certificate the seeder's HTTPS chains to (e.g. KEYS/enrolment-ca.crt)")
    s.add_argument("--operator-token-file",
                   help="file with the operator token /stats, /metrics and the dashboard require (required unless "
                        "--open-stats)")
    s.add_argument("--open-stats", action="store_true", default=None,
                   help="show /stats, /metrics and the dashboard to anyone who reaches the tracker (labs only)")
    s.add_argument("--tls-cert", help="announce over HTTPS with this certificate chain (KEYS/tls.crt from "
                   "`posswarm-seeder keys tls`)")
    s.add_argument("--tls-key", help="its private key (KEYS/tls.key)")
    s.add_argument("--node-ca", help="enrolment authority (KEYS/enrolment-ca.crt): nodes announce by their certificate")
    s.add_argument("--root", help="central's root of trust (root.json): refuse node certificates central revoked "
                   "(its list is read from the --catalog seeder)")
    s.add_argument("--catalog-poll", type=int, help="seconds between reads of the catalog and central's revocations "
                   "(default 30)")
    s.add_argument("--plain-http", action="store_true", default=None,
                   help="serve plain HTTP: standard clients only, or behind a TLS-terminating proxy")
    s.add_argument("--config", help="TOML file with the keys documented in tracker/config.py")
    s.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``posswarm-tracker``; returns the exit status."""
    try:
        args = _parser().parse_args(argv)
        overrides = {"interval": args.interval, "policy": args.policy, "cross_store": args.cross_store,
                     "udp": args.udp, "open": args.open, "catalog": args.catalog,
                     "catalog_ca": args.catalog_ca, "operator_token_file": args.operator_token_file,
                     "open_stats": args.open_stats, "tls_cert": args.tls_cert, "tls_key": args.tls_key,
                     "node_ca": args.node_ca, "plain_http": args.plain_http,
                     "root_of_trust": args.root, "catalog_poll": args.catalog_poll}
        if args.listen is not None:
            overrides["host"], overrides["port"] = tracker_config.parse_listen(args.listen)
        if args.config:
            config = tracker_config.load(args.config, **overrides)
        else:
            config = tracker_config.from_mapping({}, source="flags", **overrides)
        tracker_config.require_tls_choice(config)
    except (_UsageError, PosswarmError) as exc:
        print(f"posswarm-tracker: {exc}", file=sys.stderr)
        return 2
    logs.configure(args.log_level, component="tracker")
    try:
        # Every announce allocates; at the default threshold (700) the cyclic GC runs hundreds of
        # times a second and its pauses set the p99 (measured at 2,000 announces/s: 37-43 ms -> 23-27 ms).
        gc.freeze()
        gc.set_threshold(50_000, 20, 100)
        trio.run(_serve, config)
    except (PosswarmError, BaseExceptionGroup) as exc:
        error = _posswarm_error(exc)
        if error is None:
            raise
        print(f"posswarm-tracker: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # a second Ctrl-C while shutting down
        return 130
    return 0


def _posswarm_error(exc: BaseException) -> PosswarmError | None:
    # Nurseries wrap what they carry in groups; a person should still read one line.
    while isinstance(exc, BaseExceptionGroup):
        exc, _ = exc.split(PosswarmError)
        exc = exc.exceptions[0] if exc is not None else None
    return exc


async def _serve(config: tracker_config.TrackerConfig) -> None:
    stop = trio.Event()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def stop_on_signal():
                async for signum in signals:
                    logs.get("tracker").info("stopping", signal=signal.Signals(signum).name)
                    stop.set()
                    return

            nursery.start_soon(stop_on_signal)
            try:
                await server.run(config, shutdown=stop)
            finally:
                nursery.cancel_scope.cancel()
