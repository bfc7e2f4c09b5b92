"""Each way a passkey holder or a stranger could abuse the tracker (issue 13), over real HTTP; each failed on the old code."""

from urllib.parse import quote_from_bytes

import fastbencode
import httpx
import pytest
import trio

from tracker import server
from tracker.access import Access
from tracker.announce import DENIED, Denied
from tracker.config import TrackerConfig

H = b"\x66" * 20
KEYS = {"A": "store-A-a1B2c3D4e5F6g7H8i9J0", "B": "store-B-Z9y8X7w6V5u4T3s2R1q0"}
CENTRAL = "central-Mn0pQr1sTu2vWx3yZa4bC"
VICTIM = "192.0.2.66"


class Clock:
    def __init__(self):
        self.now = 50_000.0

    def __call__(self):
        return self.now


async def start(nursery, clock=None, **overrides):
    config = TrackerConfig(port=0, open=False, catalog="http://seeder.invalid/catalog", passkeys=KEYS,
                           central_passkeys=[CENTRAL], stats_every=0.01, open_stats=True,
                           **{"cross_store": True, "trusted_proxies": [], **overrides})
    access = server.access_rules(config)
    access.publish([H])
    url = await nursery.start(lambda task_status: server.run(config, access=access, clock=clock or Clock(),
                                                             task_status=task_status))
    return httpx.AsyncClient(base_url=url, timeout=10)


def compact(raw: bytes) -> list[str]:
    return sorted(".".join(str(b) for b in raw[i:i + 4]) + f":{int.from_bytes(raw[i + 4:i + 6], 'big')}"
                  for i in range(0, len(raw), 6))


async def announce(client, key, node, port, **extra) -> dict:
    q = {"info_hash": H, "peer_id": (node or f"plain-{port}").encode().ljust(20, b"-")[:20], "port": port, "uploaded": 0,
         "downloaded": 0, "left": 0, "compact": 1, **({"node": node} if node else {}), **extra}
    raw = "&".join(f"{k}={quote_from_bytes(v if isinstance(v, bytes) else str(v).encode(), safe='')}"
                   for k, v in q.items())
    with trio.fail_after(10):
        body = (await client.get(f"/announce/{key}?{raw}")).content
    return fastbencode.bdecode(body)


async def swarm(client):
    """Two stores, each a cache and a till, and central's seeder; ports tell them apart (all on 127.0.0.1)."""
    await announce(client, CENTRAL, "central-seeder", 6000, role="seeder", store="central")
    await announce(client, KEYS["A"], "cache-a", 6101, role="cache", store="A")
    await announce(client, KEYS["A"], "till-a", 6102, role="device", store="A")
    await announce(client, KEYS["B"], "cache-b", 6201, role="cache", store="B")
    await announce(client, KEYS["B"], "till-b", 6202, role="device", store="B")


async def test_a_store_passkey_cannot_announce_as_a_seeder_nor_be_handed_other_stores(nursery):
    # Old: role=seeder with no store= kept no store, was handed every store's caches and ranked first
    # as "central"; a plain client (no role) was handed every store's devices and caches.
    client = await start(nursery)
    await swarm(client)
    refused = await announce(client, KEYS["B"], "fake-central", 6299, role="seeder")
    assert b"role=seeder needs central's passkey" in refused[b"failure reason"]
    plain = await announce(client, KEYS["B"], None, 6298, event="started")
    assert compact(plain[b"peers"]) == ["127.0.0.1:6000", "127.0.0.1:6201", "127.0.0.1:6202"]  # B and central
    till = await announce(client, KEYS["A"], "till-a", 6102, role="device", store="A")
    assert compact(till[b"peers"]) == ["127.0.0.1:6101"]  # its own store's cache, no seeder, no B
    seeder = await announce(client, CENTRAL, "central-seeder", 6000, role="seeder", store="central")
    assert compact(seeder[b"peers"]) == ["127.0.0.1:6101", "127.0.0.1:6201", "127.0.0.1:6298"]  # never a device
    # central's passkey cannot smuggle a node into a store either.
    assert b"central's passkey is for central's seeders" in (
        await announce(client, CENTRAL, "spy", 6001, role="device", store="A"))[b"failure reason"]


async def test_ip_from_an_untrusted_address_reaches_only_the_announcers_own_store(nursery):
    # Old: ip= was believed from anyone, so every cache (and central's seeder) could be pointed at a victim.
    client = await start(nursery)
    await swarm(client)
    await announce(client, KEYS["B"], "cache-b", 6201, role="cache", store="B", ip=VICTIM)
    seen_by_a = await announce(client, KEYS["A"], "cache-a", 6101, role="cache", store="A")  # cross_store on
    assert "127.0.0.1:6201" in compact(seen_by_a[b"peers"]) and VICTIM.encode() not in str(seen_by_a).encode()
    seeder = await announce(client, CENTRAL, "central-seeder", 6000, role="seeder", store="central")
    assert all(not p.startswith(VICTIM) for p in compact(seeder[b"peers"]))
    # Its own store's till gets the claimed LAN address: behind the store's NAT that is the one that works.
    own = await announce(client, KEYS["B"], "till-b", 6202, role="device", store="B")
    assert compact(own[b"peers"]) == [f"{VICTIM}:6201"]


async def test_ip_from_a_trusted_proxy_is_believed(nursery):
    client = await start(nursery, trusted_proxies=["127.0.0.0/8"])
    await swarm(client)
    await announce(client, KEYS["B"], "cache-b", 6201, role="cache", store="B", ip="198.51.100.7")
    seen_by_a = await announce(client, KEYS["A"], "cache-a", 6101, role="cache", store="A")
    assert "198.51.100.7:6201" in compact(seen_by_a[b"peers"])


async def test_another_store_cannot_move_a_stores_record_by_reusing_its_node_id(nursery):
    # Old: records were keyed by node= alone, and node ids are public on /stats.
    client = await start(nursery)
    await swarm(client)
    await announce(client, KEYS["B"], "cache-a", 6666, role="cache", store="B", left=5)
    till = await announce(client, KEYS["A"], "till-a", 6102, role="device", store="A")
    assert compact(till[b"peers"]) == ["127.0.0.1:6101"]  # A's cache is where A's cache said
    stats = (await client.get("/stats")).json()["releases"][H.hex()]["stores"]
    assert stats["A"]["cache"] == {"node": "cache-a", "state": "seeding", "wan_bytes": 0, "stopped": False}
    assert any(n["node"] == "cache-a" and n["port"] == 6666 for n in stats["B"]["nodes"])


async def test_records_are_capped_per_store_and_in_all(nursery):
    # Old: a random node= per announce was kept for 24 h, without bound.
    client = await start(nursery, max_records_per_store=20, max_records=50)
    for n in range(20):
        assert b"failure reason" not in await announce(client, KEYS["B"], f"junk-{n}", 7000 + n, role="device",
                                                       store="B")
    full = (await announce(client, KEYS["B"], "junk-20", 7020, role="device", store="B"))[b"failure reason"]
    assert full.startswith(b"store B has 20 records on this tracker") and b"max_records_per_store" in full
    # The store's existing nodes go on announcing; other stores are not affected.
    assert b"failure reason" not in await announce(client, KEYS["B"], "junk-3", 7003, role="device", store="B")
    for n in range(20):
        assert b"failure reason" not in await announce(client, KEYS["A"], f"a-{n}", 8000 + n, role="device",
                                                       store="A")
    for n in range(10):
        await announce(client, CENTRAL, f"seeder-{n}", 9000 + n, role="seeder")
    assert b"max_records = 50" in (await announce(client, CENTRAL, "seeder-x", 9999, role="seeder"))[b"failure reason"]


async def test_quiet_records_are_freed_when_a_store_is_full():
    from tracker.peerstore import EVICT_EVERY

    clock = Clock()
    async with trio.open_nursery() as nursery:
        client = await start(nursery, clock, max_records_per_store=5)
        for n in range(5):
            await announce(client, KEYS["B"], f"junk-{n}", 7000 + n, role="device", store="B")
        clock.now += 3 * 30 + EVICT_EVERY + 1  # their peer TTL is over: no longer live, only kept for /stats
        assert b"failure reason" not in await announce(client, KEYS["B"], "till-b", 7100, role="device", store="B")
        nursery.cancel_scope.cancel()


async def test_unknown_passkeys_get_one_answer_and_are_limited_per_address(nursery):
    # Old: any length, no limit, and "unknown passkey" told a guesser when a guess was wrong.
    client = await start(nursery, passkey_guesses=5)
    answers = {(await announce(client, f"guess-{n:030d}", "till-a", 6102))[b"failure reason"] for n in range(5)}
    assert answers == {DENIED.encode()}
    # Out of guesses: even the right passkey is not looked up from this address for a while.
    assert (await announce(client, KEYS["A"], "till-a", 6102, role="device", store="A"))[b"failure reason"] \
        == DENIED.encode()


def test_a_guessing_address_recovers_and_others_are_not_affected():
    access = Access(open=False, passkeys=KEYS, central=[CENTRAL], guesses_per_minute=5)
    now = 1000.0
    for n in range(5):
        with pytest.raises(Denied):
            access.store_of(f"guess-{n}", "127.0.0.2", now)
    assert access.store_of(KEYS["A"], "127.0.0.3", now) == "A"  # another address: unaffected
    with pytest.raises(Denied):
        access.store_of(KEYS["A"], "127.0.0.2", now)
    assert access.store_of(KEYS["A"], "127.0.0.2", now + 12.1) == "A"  # a token back after 60 / 5 s
    for _ in range(10):  # no passkey at all (a BEP 15 scrape has none) is refused, but is no guess
        with pytest.raises(Denied):
            access.store_of(None, "127.0.0.4", now)
    assert access.store_of(KEYS["B"], "127.0.0.4", now) == "B"


async def test_a_standard_client_re_announcing_every_600_s_stays_in_the_swarm():
    # Old: a peer was forgotten 3 x interval (90 s) after its announce, while rtorrent re-announces no
    # sooner than every 600 s: a late joiner was handed 0 peers while the seeder was up.
    clock = Clock()
    async with trio.open_nursery() as nursery:
        client = await start(nursery, clock)
        assert b"failure reason" not in await announce(client, KEYS["A"], None, 6881, event="started")
        for late in (100, 599):
            clock.now += late - (clock.now - 50_000.0)
            got = await announce(client, KEYS["A"], None, 6882, left=10, peer_id=b"-TR3000-late%08d" % late)
            assert compact(got[b"peers"]) == ["127.0.0.1:6881"], late
        clock.now = 50_600.0  # its second announce: the tracker now knows its cadence (600 s)
        await announce(client, KEYS["A"], None, 6881)
        clock.now = 50_600.0 + 1700  # under 3 x 600 s later: still there
        got = await announce(client, KEYS["A"], None, 6883, left=10, peer_id=b"-TR3000-late-again--")
        assert "127.0.0.1:6881" in compact(got[b"peers"])
        clock.now = 50_600.0 + 1801  # beyond 3 x its cadence (and max_peer_ttl): gone
        got = await announce(client, KEYS["A"], None, 6884, left=10, peer_id=b"-TR3000-last--------")
        assert "127.0.0.1:6881" not in compact(got[b"peers"])
        nursery.cancel_scope.cancel()


async def test_the_seeder_and_a_store_announce_as_posswarm_sends_it(nursery):
    # The query posswarm/announce.py builds for the seeder (seeder/server.py: store "central", role
    # seeder, ip= its BitTorrent address) and for a store's cache, each to its own passkey's URL.
    from posswarm.announce import NodeIdentity, ReleaseReport, announce_url, parse_reply
    from posswarm.errors import PosswarmError

    client = await start(nursery)
    base = str(client.base_url)
    report = ReleaseReport("pos-os", "2026.11", H, 1000, 0, 0, 0, 0, True)
    seeder = NodeIdentity("central-seeder", "central", "seeder", "seeder", "0.0.0.0", 6881)
    cache = NodeIdentity("cache-a", "A", "cache", "cache", "10.20.0.2", 6882)
    with trio.fail_after(10):
        async with httpx.AsyncClient() as http:
            url = announce_url(f"{base}/announce/{CENTRAL}", seeder, report, "started")
            parse_reply((await http.get(url)).content, tracker_url=base)
            url = announce_url(f"{base}/announce/{KEYS['A']}", cache, report, "started")
            reply = parse_reply((await http.get(url)).content, tracker_url=base)
            # --bt-listen 0.0.0.0 says ip=0.0.0.0: the cache is handed the address the tracker saw.
            assert reply.peers == (("127.0.0.1", 6881),)
            with pytest.raises(PosswarmError, match="role=seeder needs central's passkey"):
                url = announce_url(f"{base}/announce/{KEYS['A']}", seeder, report)
                parse_reply((await http.get(url)).content, tracker_url=base)
