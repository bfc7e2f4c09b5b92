"""Runs the tracker: the HTTP listener, the UDP tracker, the catalog and revocation polls, the expiry of announces."""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import trio

from posswarm import http_service, logs
from posswarm.errors import PosswarmError
from posswarm.operator_credential import MAKE_ONE
from posswarm.operator_gate import OperatorGate, read_token
from tracker import central_trust, http_server, published, udp_server
from tracker.access import Access
from tracker.app import StatsSnapshot, make_app
from tracker.config import TrackerConfig
from tracker.desk import Desk
from tracker.metrics import TrackerMetrics
from tracker.node_auth import NodeAuthority
from tracker.peerstore import Caps, MemoryPeerStore, PeerStore

log = logs.get("tracker")


def open_peer_store(config: TrackerConfig) -> PeerStore:
    """The store named by ``peer_store`` in the config."""
    caps = Caps(config.max_records, config.max_records_per_store)
    if config.peer_store == "redis":
        from tracker.redis_store import RedisPeerStore  # only a Redis deployment needs redis-py

        return RedisPeerStore.connect(config.redis_url, peer_ttl=config.effective_peer_ttl, retain=config.retain,
                                      max_peer_ttl=config.max_peer_ttl, caps=caps)
    return MemoryPeerStore(peer_ttl=config.effective_peer_ttl, retain=config.retain, max_peer_ttl=config.max_peer_ttl,
                           caps=caps)


def operator_gate(config: TrackerConfig, metrics: TrackerMetrics) -> OperatorGate:
    """Who may read /stats, /metrics and the dashboard; PosswarmError when the config names nobody and is not open."""
    if not config.operator_token_file and not config.open_stats:
        raise PosswarmError("tracker: /stats, /metrics and the dashboard need an operator credential: pass "
                            f"--operator-token-file FILE (make one: {MAKE_ONE}), or --open-stats to show them to anyone")
    token = read_token(config.operator_token_file, source="tracker operator_token_file") \
        if config.operator_token_file else None
    return OperatorGate(token, open_to_all=config.open_stats, challenge='Basic realm="posswarm tracker", charset="UTF-8"',
                        fix="Authorization: Bearer <token>, or Basic with the token as password; "
                            "`posswarm-stats --token-file` sends it", on_refused=metrics.refused_operator)


def access_rules(config: TrackerConfig) -> Access:
    """The admission rules the config describes (the published hashes come later, from the catalog)."""
    return Access(open=config.open, passkeys=config.passkeys, central=config.central_passkeys,
                  trusted_proxies=config.trusted_proxies, guesses_per_minute=config.passkey_guesses)


def tls_context(config: TrackerConfig) -> ssl.SSLContext | None:
    """The announce port's TLS (None = plain HTTP): central's certificate; client certificates optional (standard
    BitTorrent clients have none), verified under ``node_ca`` when one is shown."""
    if config.tls_cert is None:
        return None
    try:
        context = http_service.server_context(Path(config.tls_cert), Path(config.tls_key))
        if config.node_ca is not None:
            context.load_verify_locations(cafile=config.node_ca)
            context.verify_mode = ssl.CERT_OPTIONAL
    except (OSError, ssl.SSLError) as exc:
        raise PosswarmError(f"tracker: tls_cert {config.tls_cert} / tls_key {config.tls_key} / node_ca "
                            f"{config.node_ca}: cannot use them ({exc}); are they central's KEYS/tls.crt, tls.key and "
                            "enrolment-ca.crt?") from None
    return context


def node_authority(config: TrackerConfig) -> NodeAuthority | None:
    """The enrolment authorities node certificates are admitted under (None = no node certificates)."""
    if config.node_ca is None:
        return None
    with open(config.node_ca, "rb") as f:
        return NodeAuthority(f.read(NodeAuthority.MAX_BYTES + 1), source=f"node_ca {config.node_ca}")


async def run(
    config: TrackerConfig,
    *,
    store: PeerStore | None = None,
    access: Access | None = None,
    shutdown: trio.Event | None = None,
    clock: Callable[[], float] = time.time,
    task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled or ``shutdown`` is set; ``task_status.started(url)`` once every socket is bound.

    With port 0 the URL carries the port the kernel chose. The clock
    is wall time because trackers sharing a Redis store compare each other's timestamps.
    ``access`` defaults to the config's rules; private mode then polls ``config.catalog``.
    """
    metrics = TrackerMetrics()
    operator = operator_gate(config, metrics)  # before anything is opened: a tracker without one does not start
    store = store if store is not None else open_peer_store(config)
    polled = access is None and not config.open
    access = access if access is not None else access_rules(config)
    desk = Desk(config, store, access)
    snapshot = StatsSnapshot(desk, clock, config.stats_every)
    app = make_app(snapshot, metrics, operator)
    tls, nodes = tls_context(config), node_authority(config)
    async with trio.open_nursery() as nursery:
        await nursery.start(snapshot.run)
        try:
            url = await nursery.start(partial(http_server.run, desk, app, config.host, config.port, clock, metrics,
                                              tls=tls, nodes=nodes))
        except OSError as exc:
            raise PosswarmError(
                f"tracker: cannot listen on {config.host}:{config.port} ({exc.strerror}); "
                "pick a free port or another address"
            ) from None
        if tls is None:
            log.warning("http.plain", fix="announces are plain HTTP: for standard clients, or behind a TLS-terminating "
                        "proxy; posswarm nodes announce with their certificate over --tls-cert/--tls-key")
        udp = None
        if config.udp_address is not None:
            host, port = await nursery.start(
                lambda task_status: udp_server.run(desk, *config.udp_address, clock, metrics=metrics,
                                                   task_status=task_status)
            )
            udp = f"udp://[{host}]:{port}" if ":" in host else f"udp://{host}:{port}"
        if polled:
            await nursery.start(partial(published.run, access, config.catalog, config.catalog_poll,
                                        ca=config.catalog_ca))
        if nodes is not None and config.root_of_trust is not None:
            await nursery.start(partial(central_trust.run, nodes, config.root_of_trust, config.catalog,
                                        config.catalog_poll, ca=config.catalog_ca))
        elif nodes is not None:
            log.warning("revocation.unchecked", fix="node certificates central revoked are still admitted: start the "
                        "tracker with --root ROOT.json (central's root of trust) and --catalog URL")
        nursery.start_soon(_expire_forever, store, min(config.effective_peer_ttl, 60), clock)
        if config.open_stats:
            log.warning("stats.open", fix="anyone who reaches the tracker reads /stats, /metrics and the dashboard; "
                        "start it with --operator-token-file FILE instead")
        log.info("listening", url=url, udp=udp, open=config.open, node_certificates=nodes is not None,
                 policy=config.policy,
                 interval=config.interval, peer_store=config.peer_store)
        task_status.started(url)
        if shutdown is not None:
            await shutdown.wait()
            nursery.cancel_scope.cancel()


async def _expire_forever(store: PeerStore, every: float, clock: Callable[[], float]) -> None:
    while True:
        await trio.sleep(every)
        gone = store.expire(clock())
        if gone:
            log.info("peers.expired", count=gone)
