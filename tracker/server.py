"""Runs the tracker: hypercorn (trio worker) serving the app, plus the periodic expiry of old announces."""

from __future__ import annotations

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from posswarm import logs
from posswarm.errors import PosswarmError
from tracker.app import make_app
from tracker.config import TrackerConfig
from tracker.peerstore import MemoryPeerStore, PeerStore


async def run(
    config: TrackerConfig,
    *,
    store: PeerStore | None = None,
    shutdown: trio.Event | None = None,
    task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled or ``shutdown`` is set; ``task_status.started(url)`` once the socket is bound.

    With port 0 the URL carries the port the kernel chose: hypercorn's own task_status
    reports the address of the socket it bound, so there is no bind-then-probe race.
    """
    store = store if store is not None else MemoryPeerStore(peer_ttl=config.effective_peer_ttl, retain=config.retain)
    app = make_app(config, store, trio.current_time)
    hc = HypercornConfig()
    hc.bind = [f"[{config.host}]:{config.port}" if ":" in config.host else f"{config.host}:{config.port}"]
    hc.accesslog = None
    hc.loglevel = "WARNING"  # our own `listening` line replaces hypercorn's "Running on"
    hc.graceful_timeout = 2.0
    stop = shutdown if shutdown is not None else trio.Event()
    bound = False
    try:
        async with trio.open_nursery() as nursery:

            async def serve_until_stopped(task_status=trio.TASK_STATUS_IGNORED):
                await serve(app, hc, shutdown_trigger=stop.wait, task_status=task_status)
                nursery.cancel_scope.cancel()  # hypercorn finished its graceful stop; end the expiry task too

            url = (await nursery.start(serve_until_stopped))[0]
            bound = True
            nursery.start_soon(_expire_forever, store, min(config.effective_peer_ttl, 60))
            logs.get("tracker").info("listening", url=url, policy=config.policy, interval=config.interval)
            task_status.started(url)
    except BaseExceptionGroup as group:
        failed = _bind_error(group)
        if bound or failed is None:
            raise
        raise PosswarmError(
            f"tracker: cannot listen on {config.host}:{config.port} ({failed.strerror}); pick a free port or another address"
        ) from None


def _bind_error(group: BaseExceptionGroup) -> OSError | None:
    # hypercorn binds inside nested nurseries, so a busy port arrives as groups within groups.
    matched, _ = group.split(OSError)
    while isinstance(matched, BaseExceptionGroup):
        matched = matched.exceptions[0]
    return matched


async def _expire_forever(store: PeerStore, every: float) -> None:
    while True:
        await trio.sleep(every)
        gone = store.expire(trio.current_time())
        if gone:
            logs.get("tracker").info("peers.expired", count=gone)
