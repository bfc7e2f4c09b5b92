"""Find the other nodes of the store over mDNS: the one place python-zeroconf meets trio."""

from __future__ import annotations

import functools
import itertools
import math
import socket
from dataclasses import dataclass

import trio
from zeroconf import IPVersion, NonUniqueNameException, ServiceBrowser, ServiceInfo, ServiceStateChange, Zeroconf

from posswarm import logs
from posswarm.discovery.records import SERVICE_TYPE, Advert, from_service, instance_name, to_txt
from posswarm.errors import PosswarmError

log = logs.get("discovery")

# Resolution is normally answered from zeroconf's cache in ~1 ms; the timeout only
# matters for a peer whose SRV/TXT have not arrived yet, which zeroconf re-queries meanwhile.
RESOLVE_TIMEOUT_MS = 3000
# unregister (goodbye) + browser cancel + close measured well under 1 s; past this we abandon
# the worker thread so a node's shutdown is never held hostage by the zeroconf thread.
SHUTDOWN_TIMEOUT_S = 2.5
# Resolves run in worker threads; bound them so a burst of 40 tills does not take every thread.
RESOLVERS_PER_NODE = 8


@dataclass(frozen=True)
class PeerFound:
    """Another node of the network resolved (or its advert changed)."""

    advert: Advert


@dataclass(frozen=True)
class PeerLost:
    """A node said goodbye; a crashed node is NOT reported here (mDNS keeps it ~19 min)."""

    node_id: str


@dataclass(frozen=True)
class _Seen:
    name: str
    change: ServiceStateChange


@dataclass(frozen=True)
class _Resolved:
    name: str
    generation: int  # which sighting of `name` this answers; older answers are stale
    advert: Advert | None


def _register(zc: Zeroconf, info: ServiceInfo, advert: Advert) -> None:
    """Probe and announce our name (blocks ~1.6 s). A node restarted after a crash or power cut finds its
    own last announcement still cached by its peers (no goodbye was sent): the name is "taken"
    at our own address. That one we reclaim; a holder at another address is a real duplicate node id."""
    try:
        zc.register_service(info)
    except NonUniqueNameException:
        holder = ServiceInfo(SERVICE_TYPE, info.name)
        holder.load_from_cache(zc)
        if advert.address not in holder.parsed_addresses():
            raise
        log.warning("mdns.name_reclaimed", node=advert.node_id, address=advert.address,
                    reason="a previous run of this node did not say goodbye")
        zc.register_service(info, cooperating_responders=True)


async def run(advert: Advert, events: trio.MemorySendChannel, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Advertise ``advert`` and send PeerFound/PeerLost for every other node until cancelled.

    Does not filter by store (the node does) and does not close ``events`` (the caller owns it).
    """
    own_name = instance_name(advert.node_id)
    zc = await trio.to_thread.run_sync(_open_zeroconf, advert)
    info = ServiceInfo(
        SERVICE_TYPE,
        own_name,
        server=f"{advert.node_id}.local.",
        addresses=[socket.inet_aton(advert.address)],
        port=advert.bt_port,
        properties=to_txt(advert),
    )
    registered = False
    browser: ServiceBrowser | None = None
    try:
        try:
            # Probing and announcing block ~1.6 s.
            await trio.to_thread.run_sync(_register, zc, info, advert, abandon_on_cancel=True)
        except NonUniqueNameException:
            raise PosswarmError(
                f"node {advert.node_id}: mDNS name {own_name} is already taken by another node on the network "
                "(give every node a unique node id)"
            ) from None
        registered = True
        log.info("mdns.registered", node=advert.node_id, store=advert.store, address=advert.address, bt_port=advert.bt_port)

        token = trio.lowlevel.current_trio_token()
        # Unbounded: send_nowait on a full channel from run_sync_soon crashed trio.
        seen_send, seen_recv = trio.open_memory_channel[object](math.inf)

        def deliver(item: object) -> None:  # runs on trio's thread
            try:
                seen_send.send_nowait(item)
            except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
                pass  # we are shutting down

        def on_change(zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
            # Runs on the browser's thread: an exception here kills it silently.
            try:
                if name.lower() != own_name.lower():
                    token.run_sync_soon(deliver, _Seen(name, state_change))
            except Exception as exc:  # includes trio.RunFinishedError after trio.run has returned
                log.debug("mdns.event.dropped", name=name, reason=repr(exc))

        browser = await trio.to_thread.run_sync(lambda: ServiceBrowser(zc, SERVICE_TYPE, handlers=[on_change]))
        async with seen_send, seen_recv, trio.open_nursery() as nursery:
            task_status.started()
            await _follow(zc, seen_recv, seen_send, events, nursery)
    finally:
        with trio.CancelScope(deadline=trio.current_time() + SHUTDOWN_TIMEOUT_S, shield=True) as scope:
            await trio.to_thread.run_sync(_shut_down, zc, browser, info if registered else None, abandon_on_cancel=True)
        if scope.cancelled_caught:
            log.warning("mdns.shutdown.slow", node=advert.node_id, timeout_s=SHUTDOWN_TIMEOUT_S)


async def _follow(
    zc: Zeroconf,
    seen: trio.MemoryReceiveChannel,
    seen_send: trio.MemorySendChannel,
    events: trio.MemorySendChannel,
    nursery: trio.Nursery,
) -> None:
    """Turn browser sightings into PeerFound/PeerLost; the only task that owns the roster."""
    resolvers = trio.CapacityLimiter(RESOLVERS_PER_NODE)
    generations = itertools.count()
    present: dict[str, int] = {}  # DNS names are case-insensitive: keyed by name.lower()
    reported: dict[str, Advert] = {}  # what we last sent PeerFound with, same keys
    async for item in seen:
        key = item.name.lower()
        if isinstance(item, _Seen):
            if item.change is ServiceStateChange.Removed:
                present.pop(key, None)
                gone = reported.pop(key, None)
                if gone is not None:
                    log.info("mdns.peer.lost", node=gone.node_id, store=gone.store)
                    await events.send(PeerLost(gone.node_id))
            else:  # Added or Updated
                present[key] = generation = next(generations)
                nursery.start_soon(_resolve, zc, item.name, generation, resolvers, seen_send.clone())
        elif isinstance(item, _Resolved):
            # Only the answer to the latest sighting counts: an older one may finish later with
            # the previous TXT, or after the node said goodbye. A bad advert is someone else's service.
            if present.get(key) != item.generation or item.advert is None or reported.get(key) == item.advert:
                continue
            reported[key] = item.advert
            log.info("mdns.peer.found", node=item.advert.node_id, store=item.advert.store, role=item.advert.role,
                     address=item.advert.address)
            await events.send(PeerFound(item.advert))


async def _resolve(
    zc: Zeroconf, name: str, generation: int, limiter: trio.CapacityLimiter, results: trio.MemorySendChannel
) -> None:
    async with results:
        advert = await trio.to_thread.run_sync(_lookup, zc, name, limiter=limiter, abandon_on_cancel=True)
        try:
            results.send_nowait(_Resolved(name, generation, advert))
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass  # the roster has stopped


def _lookup(zc: Zeroconf, name: str) -> Advert | None:
    """Resolve one service in a worker thread; None (logged) for anything unusable."""
    try:
        info = zc.get_service_info(SERVICE_TYPE, name, timeout=RESOLVE_TIMEOUT_MS)
        if info is None:
            log.info("mdns.resolve.none", name=name)
            return None
        advert = from_service(name, info.parsed_addresses(IPVersion.V4Only), info.port, info.properties)
    except Exception as exc:  # a foreign name or a closing zeroconf must not reach trio as a crash
        log.info("mdns.resolve.failed", name=name, reason=repr(exc))
        return None
    if advert is None:
        log.info("mdns.advert.bad", name=name)
    return advert


def _open_zeroconf(advert: Advert) -> Zeroconf:
    try:
        # use_asyncio=False: otherwise zeroconf attaches to any running asyncio loop.
        return Zeroconf(interfaces=[advert.address], ip_version=IPVersion.V4Only, use_asyncio=False)
    except (OSError, RuntimeError, ValueError) as exc:
        raise PosswarmError(
            f"node {advert.node_id}: cannot start mDNS on {advert.address}: {exc} "
            "(is that address on an up, multicast-capable interface of this host?)"
        ) from None


def _shut_down(zc: Zeroconf, browser: ServiceBrowser | None, info: ServiceInfo | None) -> None:
    # Goodbye first, so peers see PeerLost at once rather than after the ~19 min PTR TTL floor.
    steps = []
    if info is not None:
        steps.append(functools.partial(zc.unregister_service, info))
    if browser is not None:
        steps.append(browser.cancel)
    steps.append(zc.close)
    for step in steps:
        try:
            step()
        except Exception as exc:  # keep going: close must run even if the goodbye failed
            log.warning("mdns.shutdown.failed", reason=repr(exc))
