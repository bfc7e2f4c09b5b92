"""Store peer discovery over real zeroconf on loopback aliases (127.0.0.x), driven from trio."""

import math
import secrets
import socket

import pytest
import trio
from zeroconf import IPVersion, ServiceInfo, Zeroconf

from posswarm.discovery import mdns
from posswarm.discovery.mdns import PeerFound, PeerLost
from posswarm.discovery.records import SERVICE_TYPE, Advert, instance_name, to_txt
from posswarm.errors import PosswarmError

# Random per run, so concurrent runs on this machine (all sharing lo:5353) never collide;
# events from anyone else's nodes are skipped by store/node id below.
STORE = "T" + secrets.token_hex(4)


def till(n: int, address: str, **fields) -> Advert:
    return Advert(
        node_id=f"{STORE}-till-{n}-{secrets.token_hex(3)}",
        store=STORE,
        role="device",
        device_class="pos",
        address=address,
        bt_port=6800 + n,
        **fields,
    )


def register_without_probing(zc: Zeroconf, info: ServiceInfo) -> None:
    # Skipping the 1.6 s uniqueness probe keeps the test fast; the names are random anyway.
    zc.register_service(info, cooperating_responders=True)


class Node:
    """One mdns.run in the test's nursery, with its own events and its own off switch."""

    def __init__(self, advert: Advert):
        self.advert = advert
        self.send, self.events = trio.open_memory_channel(math.inf)
        self.scope = trio.CancelScope()

    async def start(self, nursery: trio.Nursery) -> "Node":
        async def serve(task_status=trio.TASK_STATUS_IGNORED):
            with self.scope:
                await mdns.run(self.advert, self.send, task_status=task_status)

        await nursery.start(serve)
        return self

    async def next_event(self, *, about: set[str]):
        """The next event about one of our node ids; other runs' nodes are ignored."""
        async for event in self.events:
            node_id = event.advert.node_id if isinstance(event, PeerFound) else event.node_id
            if node_id in about:
                return event
        raise AssertionError("events channel closed")

    async def found(self, others: list[Advert]) -> dict[str, Advert]:
        wanted = {a.node_id for a in others}
        seen: dict[str, Advert] = {}
        while set(seen) != wanted:
            event = await self.next_event(about=wanted | {self.advert.node_id})
            assert isinstance(event, PeerFound), event
            assert event.advert.node_id != self.advert.node_id, "a node reported itself"
            seen[event.advert.node_id] = event.advert
        return seen


async def test_two_nodes_on_loopback_aliases_find_each_other_and_see_goodbye():
    # 127.0.0.21/.22 are not configured on lo; they work because lo owns all of 127/8.
    a = Node(till(1, "127.0.0.21"))
    b = Node(till(2, "127.0.0.22", http_port=8080, gossip_port=7946))
    async with trio.open_nursery() as nursery:
        with trio.fail_after(10):
            async with trio.open_nursery() as starting:  # register both at once: ~1.6 s, not 3.2 s
                starting.start_soon(a.start, nursery)
                starting.start_soon(b.start, nursery)
            assert await a.found([b.advert]) == {b.advert.node_id: b.advert}
            assert await b.found([a.advert]) == {a.advert.node_id: a.advert}

        b.scope.cancel()
        with trio.fail_after(5):
            event = await a.next_event(about={b.advert.node_id})
        assert event == PeerLost(b.advert.node_id)
        nursery.cancel_scope.cancel()


async def test_three_nodes_each_find_the_other_two_and_never_themselves():
    nodes = [Node(till(n, f"127.0.0.{30 + n}")) for n in range(3)]
    async with trio.open_nursery() as nursery:
        with trio.fail_after(10):
            async with trio.open_nursery() as starting:
                for node in nodes:
                    starting.start_soon(node.start, nursery)
            for node in nodes:
                others = [n.advert for n in nodes if n is not node]
                assert await node.found(others) == {a.node_id: a for a in others}
        nursery.cancel_scope.cancel()


async def test_shutdown_is_prompt_and_sends_goodbye():
    a = Node(till(1, "127.0.0.41"))
    b = Node(till(2, "127.0.0.42"))
    async with trio.open_nursery() as nursery:
        with trio.fail_after(10):
            async with trio.open_nursery() as starting:
                starting.start_soon(a.start, nursery)
                starting.start_soon(b.start, nursery)
            await a.found([b.advert])
        b.scope.cancel()
        started = trio.current_time()
        with trio.fail_after(5):
            assert await a.next_event(about={b.advert.node_id}) == PeerLost(b.advert.node_id)
        nursery.cancel_scope.cancel()
    # Both nodes stopped (unregister, browser cancel, close) inside the nursery's exit.
    assert trio.current_time() - started < 3


async def test_garbage_service_of_our_type_is_ignored_and_browser_survives():
    a = Node(till(1, "127.0.0.51"))
    foreign = await trio.to_thread.run_sync(
        lambda: Zeroconf(interfaces=["127.0.0.52"], ip_version=IPVersion.V4Only, use_asyncio=False)
    )
    garbage_name = f"{STORE}-junk-{secrets.token_hex(3)}"
    garbage = [
        # right shape, wrong version
        ServiceInfo(SERVICE_TYPE, instance_name(garbage_name + "-v"), server=f"{garbage_name}-v.local.",
                    addresses=[socket.inet_aton("127.0.0.52")], port=1,
                    properties={"v": "9", "store": STORE, "role": "device", "class": "pos", "bt": "1",
                                "http": "0", "gossip": "0", "node": garbage_name + "-v"}),
        # bad utf-8, missing keys, a boolean attribute
        ServiceInfo(SERVICE_TYPE, instance_name(garbage_name + "-b"), server=f"{garbage_name}-b.local.",
                    addresses=[socket.inet_aton("127.0.0.52")], port=2,
                    properties={b"store": b"\xff\xfe", b"v": None}),
    ]
    try:
        async with trio.open_nursery() as nursery:
            with trio.fail_after(15):
                await a.start(nursery)
                for info in garbage:  # registered while a browses, so a sees (and drops) them first
                    await trio.to_thread.run_sync(register_without_probing, foreign, info)
                b = await Node(till(2, "127.0.0.53")).start(nursery)
                ours = {b.advert.node_id, garbage_name + "-v", garbage_name + "-b"}
                event = await a.next_event(about=ours)
                assert event == PeerFound(b.advert)
            nursery.cancel_scope.cancel()
    finally:
        await trio.to_thread.run_sync(foreign.close)


async def test_changed_advert_is_reported_again():
    a = Node(till(1, "127.0.0.71"))
    other = till(2, "127.0.0.72")
    foreign = await trio.to_thread.run_sync(
        lambda: Zeroconf(interfaces=["127.0.0.72"], ip_version=IPVersion.V4Only, use_asyncio=False)
    )

    def info(advert: Advert) -> ServiceInfo:
        return ServiceInfo(SERVICE_TYPE, instance_name(advert.node_id), server=f"{advert.node_id}.local.",
                           addresses=[socket.inet_aton(advert.address)], port=advert.bt_port,
                           properties=to_txt(advert))

    try:
        async with trio.open_nursery() as nursery:
            with trio.fail_after(10):
                await a.start(nursery)
                await trio.to_thread.run_sync(register_without_probing, foreign, info(other))
                assert await a.next_event(about={other.node_id}) == PeerFound(other)
                moved = Advert(**{**other.__dict__, "http_port": 8081, "gossip_port": 7947})
                await trio.to_thread.run_sync(foreign.update_service, info(moved))
                assert await a.next_event(about={other.node_id}) == PeerFound(moved)
            nursery.cancel_scope.cancel()
    finally:
        await trio.to_thread.run_sync(foreign.close)


async def test_duplicate_node_id_is_a_readable_error():
    a = Node(till(1, "127.0.0.61"))
    twin = Node(Advert(**{**a.advert.__dict__, "address": "127.0.0.62"}))
    async with trio.open_nursery() as nursery:
        with trio.fail_after(10):
            await a.start(nursery)
            with pytest.raises(PosswarmError, match=f"node {a.advert.node_id}: mDNS name .* already taken"):
                await twin.start(nursery)
        nursery.cancel_scope.cancel()


async def test_address_not_on_this_host_is_a_readable_error():
    # 192.0.2.0/24 is TEST-NET-1 (RFC 5737): never a local address.
    lonely = Node(till(1, "192.0.2.7"))
    async with trio.open_nursery() as nursery:
        with trio.fail_after(10):
            with pytest.raises(PosswarmError, match="cannot start mDNS on 192.0.2.7"):
                await lonely.start(nursery)
