"""Central behind Debian's HAProxy (contrib/haproxy): two trackers on one Redis, two seeders on one releases
directory and one PostgreSQL; one of each is killed mid-rollout, and nothing is lost."""

import datetime
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from functools import partial
from pathlib import Path
from urllib.parse import quote_from_bytes

import fastbencode
import httpx
import msgpack
import pytest
import trio

from posswarm.chunks import chunk_relpath
from posswarm.errors import PosswarmError, Unreachable
from posswarm.identity.credential import load_credential
from posswarm.identity.tls import central_context
from posswarm.keys import KeyRing, load_private_key
from posswarm.manifest import Manifest
from posswarm.release import MANIFEST_NAME, TORRENT_NAME
from posswarm.sales import batch_signature
from posswarm.sales.model import Line, Sale, Tender
from posswarm.sku.catalog import SkuReplica
from posswarm.sku.signature import SkuSignatures
from posswarm.storedata import central as to_central
from posswarm.trust.client import CentralTrust
from posswarm.trust.state import TrustError
from posswarm.wallclock import now_ms
from seeder.keys_cli import init_keys
from tests.seeder.test_sales_store import postgres_dsn  # noqa: F401  (a real PostgreSQL server)
from tests.tracker.conftest import redis_url, stop_with_the_test, tracker_process  # noqa: F401  (real redis-server and trackers)
from tools.lab import bin_path, run_process, write_image, write_operator_token

CONFIG = Path(__file__).resolve().parents[2] / "contrib" / "haproxy" / "posswarm-central.cfg"
H = b"\x66" * 20
STORES, TILLS = 4, 5
pytestmark = pytest.mark.skipif(shutil.which("haproxy") is None, reason="Debian haproxy is not installed (CI installs it)")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def _haproxy(nursery, workdir: Path, trackers: list[str], front: int, seeders: list[str] = (),
                   seeder_front: int | None = None, tls_trackers: list[str] = (), tls_front: int | None = None) -> None:
    # maxconn sizes HAProxy's descriptor limit: this machine's hard limit is lower than a central host's.
    config = CONFIG.read_text().replace("198.51.100.10:6969", f"127.0.0.1:{front}").replace("maxconn 20000",
                                                                                            "maxconn 2000")
    for i, url in enumerate(trackers, 1):
        config = config.replace(f"198.51.100.2{i}:6969", url.removeprefix("http://"))
    # Sections without processes stay, pointed where nothing listens.
    config = config.replace("198.51.100.10:6970", f"127.0.0.1:{tls_front or _free_port()}")
    for i in (1, 2):
        config = config.replace(f"198.51.100.2{i}:6970",
                                tls_trackers[i - 1].removeprefix("https://") if tls_trackers else "127.0.0.1:9")
    config = config.replace("198.51.100.10:8080", f"127.0.0.1:{seeder_front or _free_port()}")
    for i in (1, 2):
        config = config.replace(f"198.51.100.3{i}:8080",
                                seeders[i - 1].removeprefix("http://") if seeders else "127.0.0.1:9")
    (workdir / "haproxy.cfg").write_text(config)
    process = await trio.lowlevel.open_process(["haproxy", "-db", "-f", str(workdir / "haproxy.cfg")],
                                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    nursery.start_soon(stop_with_the_test, process)


def _host(node: str) -> int:
    return 1 if node == "cache" else 10 + int(node.rsplit("-", 1)[1])


async def _announce(client: httpx.AsyncClient, store: int, node: str, left: int, info_hash: bytes = H, *,
                    claimed_store: int | None = None) -> dict:
    role = "cache" if node == "cache" else "device"
    q = {"info_hash": info_hash, "peer_id": f"{store}{node}".encode().ljust(20, b"-"), "port": 6881, "uploaded": 0,
         "downloaded": 0, "left": left, "ip": f"10.{store}.0.{_host(node)}", "node": node, "role": role,
         "store": f"S{store if claimed_store is None else claimed_store:04d}", "release": "pos-os@2026.11",
         "size": 1000, "wan": 1000 if role == "cache" else 0, "lan": 1000 - left if role == "device" else 0,
         "installed": int(left == 0), "compact": 1}
    raw = "&".join(f"{k}={quote_from_bytes(v if isinstance(v, bytes) else str(v).encode(), safe='')}"
                   for k, v in q.items())
    answer = await client.get(f"/announce?{raw}")
    assert answer.status_code == 200, answer.text
    decoded = fastbencode.bdecode(answer.content)
    assert (b"failure reason" in decoded) == (claimed_store is not None), decoded
    return decoded


async def _healthy(client: httpx.AsyncClient) -> bool:
    try:
        return (await client.get("/healthz")).status_code == 200
    except httpx.TransportError:
        return False


async def test_killing_one_tracker_mid_rollout_loses_no_store_and_the_dashboard_stays_up(
        nursery, tmp_path, redis_url, tracker_process):  # noqa: F811
    config, token = tmp_path / "tracker.toml", write_operator_token(tmp_path / "operator.token")
    config.write_text(f'listen = "127.0.0.1:0"\nopen = true\npeer_store = "redis"\nredis_url = "{redis_url}"\n'
                      f'interval = 5\noperator_token_file = "{token}"\n')
    front = _free_port()
    with trio.fail_after(60):
        (first, doomed), second = await tracker_process(config, with_process=True), await tracker_process(config)
        await _haproxy(nursery, tmp_path, [first, second], front)
        # A connection per request, as store nodes behind NAT mostly make: none is reused after HAProxy closed it.
        no_reuse = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{front}", timeout=10, limits=no_reuse) as client:
            while not await _healthy(client):  # HAProxy up and its checks passed
                await trio.sleep(0.1)
            tills = [f"till-{j}" for j in range(TILLS)]
            for store in range(STORES):  # half-way: caches done, every till half there
                await _announce(client, store, "cache", 0)
                for till in tills:
                    await _announce(client, store, till, 500)
            doomed.send_signal(signal.SIGKILL)  # a machine lost, not a clean stop
            # Every announce after it is answered, through the one address the stores know.
            answered = 0
            for store in range(STORES):
                for till in tills:
                    peers = (await _announce(client, store, till, 0))[b"peers"]
                    # Its own store's nodes, which the other tracker recorded in the shared Redis.
                    hosts = {bytes(peers[i:i + 4]) for i in range(0, len(peers), 6)}
                    assert hosts and all(h[:2] == bytes([10, store]) for h in hosts), (store, till, hosts)
                    answered += 1
            # The operator's token is the same on both trackers: whichever answers, it is let in.
            operator = {"authorization": f"Bearer {token.read_text()}"}
            stats = (await client.get("/stats", headers=operator)).json()["releases"]["pos-os@2026.11"]
            page = await client.get("/", headers=operator)
    assert answered == STORES * TILLS
    assert stats["stores_total"] == STORES and stats["devices_installed"] == STORES * TILLS
    assert page.status_code == 200 and f"<b>{STORES}</b> stores" in page.text


# Central's timestamp expires 6 s after it is signed, so each seeder renews it every 3 s: both race for it all the run.
EXPIRY_S = 6
RELEASE = ("pos-image", "2026.12")


class _Store:
    """One store's cache as central sees it: it follows the signed state, sends its tills' sales, fetches the release."""

    def __init__(self, n: int, root: Path, keys, front: str) -> None:
        self.id, self.front = f"S{n:04d}", front
        self.trust = CentralTrust(keys.root, root / "tuf", grace_s=0)
        self.trust.load()
        identity = keys.enrol(root / "identity", node_id=f"cache-{n}", store=self.id, role="cache", device_class="cache")
        enrolment = load_private_key(keys.key("enrolment")).public_key()
        self.credential = load_credential(identity, (enrolment,), now=datetime.datetime.now(datetime.timezone.utc))
        self.versions: list[int] = []  # central's timestamp versions, as this cache verified them, in order
        self.refused: list[str] = []
        self.sent = self.cents = self.resent = 0
        self.answered_at: list[float] = []  # when each refresh and each sales batch was answered
        # Its SKU replica, as a cache keeps it: central's long-polled changes, each entry's signature checked.
        self.prices = SkuReplica(str(root / "sku.sqlite"))
        self.sku_checks = SkuSignatures(KeyRing([load_private_key(keys.key("sku")).public_key()]))
        self.sku_cursor = 0
        self.price_at: dict[tuple[str, int], float] = {}  # (code, price) -> when this cache first held it
        # Where the long polls go, in turn: both seeders before the kill (a cursor from either is asked of the
        # other, as a round-robin proxy would), then the proxy's address.
        self.sku_from = [front]

    async def follow_prices(self, client: httpx.AsyncClient, stop: trio.Event) -> None:
        polls = 0
        while not stop.is_set():
            polls += 1
            source = self.sku_from[polls % len(self.sku_from)]
            try:
                entries, self.sku_cursor, _, _ = await to_central.sku_changes(client, source, self.sku_cursor,
                                                                              wait=2.0)
            except PosswarmError:
                await trio.sleep(0.1)  # a poll the dying seeder cut: the cache asks again, as it does
                continue
            self.prices.apply(entries, check=self._accepted)

    def _accepted(self, newer: list) -> list:
        accepted = self.sku_checks.accepted(newer, source="central")
        for entry in accepted:
            self.price_at.setdefault((entry.code, entry.price_cents), time.monotonic())
        return accepted

    def price(self, code: str) -> int | None:
        entry = self.prices.get(code)
        return entry.price_cents if entry else None

    async def follow(self, stop: trio.Event) -> None:
        while not stop.is_set():
            try:
                state = await self.trust.refresh(self.front)
            except Unreachable:
                continue  # a refresh the dying seeder cut: the cache tries again, as it does
            except TrustError as exc:
                self.refused.append(str(exc))
                continue
            self.versions.append(state.versions["timestamp"])
            self.answered_at.append(time.monotonic())

    async def sell(self, client: httpx.AsyncClient, stop: trio.Event) -> None:
        seq = 0
        while not stop.is_set():
            sales = [Sale(f"till-{j}", "ab" * 16, seq + 1, now_ms(), (Line("SKU0001", 1, 100 + j),), 100 + j,
                          (Tender("cash", 100 + j),)) for j in range(TILLS)]
            body = msgpack.packb([s.to_wire() for s in sales])
            while True:  # a batch is resent until central answers for it, as a cache's outbox does
                headers = batch_signature.sign(self.credential.key, self.credential.certificate, self.id, body,
                                               now_ms=now_ms())
                try:
                    answer = await client.post("/sales/ingest", params={"store": self.id}, content=body,
                                               headers=headers)
                    if answer.status_code == 200:
                        break
                    assert answer.status_code in (502, 503), answer.text  # the proxy, a seeder it lost
                except httpx.TransportError:
                    pass
                self.resent += 1
            seq += 1
            self.sent += len(sales)
            self.cents += sum(s.total_cents for s in sales)
            self.answered_at.append(time.monotonic())

    def longest_gap_s(self, after: float) -> float:
        marks = sorted(t for t in self.answered_at if t >= after - 5)
        return max((b - a for a, b in zip(marks, marks[1:])), default=0.0)


SKU, SIGNER_TURN = "SKU0001", "event='sku.signer_turn'"


async def _import_prices(csv: Path, sku_db: str, prices: dict[str, int], times: dict[str, float]) -> None:
    """`posswarm-seeder sku import` into the seeders' shared catalog, as the retailer's system runs it; ``times``:
    when it began and ended."""
    times["began"] = time.monotonic()
    csv.write_text("code,barcode,name,price_cents,tax_class\n" + "".join(
        f"{code},,{code},{price},A\n" for code, price in prices.items()))
    done = await trio.run_process([bin_path("posswarm-seeder"), "sku", "import", str(csv), "--sku-db", sku_db],
                                  capture_stdout=True, capture_stderr=True, check=False)
    assert done.returncode == 0, done.stderr
    times["ended"] = time.monotonic()


async def _central_seeds(tracker: httpx.AsyncClient, info_hash: bytes) -> set[bytes]:
    """The central seeders (127.0.0.1, a port each) the tracker hands a store's cache for ``info_hash``."""
    peers = (await _announce(tracker, 0, "cache", 1000, info_hash))[b"peers"]
    return {bytes(peers[i:i + 6]) for i in range(0, len(peers), 6) if bytes(peers[i:i + 4]) == bytes([127, 0, 0, 1])}


async def _long_polls_stay(central: httpx.AsyncClient) -> None:
    """A cache's long polls on /catalog/changes all go to one seeder: a token (its boot id and change count)
    taken to the other seeder would be answered at once, and the cache would poll in a loop."""
    tokens = [(await central.get("/catalog/changes")).json()["token"]]
    for _ in range(8):
        with trio.move_on_after(0.5):  # held: nothing changed on that seeder meanwhile
            tokens.append((await central.get("/catalog/changes", params={"after": tokens[-1]})).json()["token"])
    assert len({token.split(":")[0] for token in tokens}) == 1, tokens


async def _every(stores: list[_Store], test) -> None:
    while not all(test(s) for s in stores):
        await trio.sleep(0.1)


async def test_killing_a_tracker_and_a_seeder_mid_rollout_loses_no_store_no_sale_and_no_signed_version(
        nursery, tmp_path, redis_url, tracker_process, postgres_dsn):  # noqa: F811
    import psycopg

    with psycopg.connect(postgres_dsn, autocommit=True) as admin:
        admin.execute("DROP DATABASE IF EXISTS failover")
        admin.execute("CREATE DATABASE failover")
    sales_db = postgres_dsn.rsplit("/", 1)[0] + "/failover"
    releases, keys_dir = tmp_path / "releases", tmp_path / "keys"
    keys_dir.mkdir()
    keys = init_keys(keys_dir, releases)
    payload = write_image(tmp_path / "image.bin", 4, seed=18)
    published = await trio.run_process([bin_path("posswarm-seeder"), "publish", str(payload), "--name", RELEASE[0],
                                        "--version", RELEASE[1], "--key", str(keys.key("targets")), "--out",
                                        str(releases)], capture_stdout=True, capture_stderr=True, check=False)
    assert published.returncode == 0, published.stderr
    config, token = tmp_path / "tracker.toml", write_operator_token(tmp_path / "operator.token")
    config.write_text(f'listen = "127.0.0.1:0"\nopen = true\npeer_store = "redis"\nredis_url = "{redis_url}"\n'
                      f'interval = 5\noperator_token_file = "{token}"\n')
    front, seeder_front = _free_port(), _free_port()
    pids: dict[str, int] = {}
    with trio.fail_after(90):
        nursery.start_soon(_import_prices, tmp_path / "catalog.csv", sales_db, {SKU: 100}, {})  # the chain's catalog
        (first, doomed_tracker), second = await tracker_process(config, with_process=True), await tracker_process(config)
        seeders = []
        for i in (1, 2):  # the same RELEASES, timestamp and SKU keys, the same PostgreSQL; a data dir each
            seeders.append(await nursery.start(partial(
                run_process, f"seeder-{i}",
                [bin_path("posswarm-seeder"), "serve", "--releases", str(releases), "--plain-http",
                 "--timestamp-key", str(keys.key("timestamp")), "--timestamp-expiry-s", str(EXPIRY_S),
                 "--sales-db", sales_db, "--sku-db", sales_db, "--sku-key", str(keys.key("sku")),
                 "--data-dir", str(tmp_path / f"seeder-{i}"),
                 "--operator-token-file", str(token), "--listen", f"127.0.0.1:{_free_port()}",
                 "--bt-listen", "127.0.0.1:0", "--tracker", f"http://127.0.0.1:{front}/announce"],
                tmp_path / f"seeder-{i}.log", kind="seeder", pids=pids)))
            while i == 1 and SIGNER_TURN not in (tmp_path / "seeder-1.log").read_text():
                await trio.sleep(0.1)  # seeder-1 signs the catalog: the kill takes the signer with it
        await _haproxy(nursery, tmp_path, [first, second], front, seeders, seeder_front)
        no_reuse = httpx.Limits(max_keepalive_connections=0)
        tracker = httpx.AsyncClient(base_url=f"http://127.0.0.1:{front}", timeout=10, limits=no_reuse)
        central = httpx.AsyncClient(base_url=f"http://127.0.0.1:{seeder_front}", timeout=10, limits=no_reuse)
        while not (await _healthy(tracker) and await _healthy(central)):
            await trio.sleep(0.1)
        stores = [_Store(n, tmp_path / f"store-{n}", keys, f"http://127.0.0.1:{seeder_front}") for n in range(STORES)]
        for store in stores:
            store.sku_from = list(seeders)

    stop = trio.Event()
    async with trio.open_nursery() as flowing:
        for store in stores:
            flowing.start_soon(store.follow, stop)
            flowing.start_soon(store.sell, central, stop)
            flowing.start_soon(store.follow_prices, central, stop)
        with trio.fail_after(120):
            # Half-way: every store has verified central's state, sold and holds the catalog, its cache done, every
            # till half there.
            await _every(stores, lambda s: len(s.versions) >= 2 and s.sent >= 5 * TILLS and s.price(SKU) == 100)
            for n in range(STORES):
                await _announce(tracker, n, "cache", 0)
                for j in range(TILLS):
                    await _announce(tracker, n, f"till-{j}", 500)
            # Both seeders seed the release over BitTorrent: the tracker hands a cache both (two peer ids).
            seeded = Manifest.from_bytes((releases / RELEASE[0] / RELEASE[1] / MANIFEST_NAME).read_bytes())
            while len(await _central_seeds(tracker, seeded.info_hash_v1)) < 2:
                await trio.sleep(0.2)
            await _long_polls_stay(central)
            before = max(v for s in stores for v in s.versions)
            killed_at = time.monotonic()
            doomed_tracker.send_signal(signal.SIGKILL)  # machines lost, not clean stops, while sales flow
            os.kill(pids["seeder-1"], signal.SIGKILL)
            for store in stores:
                store.sku_from = [store.front]
            # A price change after the kill: the survivor takes the signer's turn, signs it, and every cache has it.
            change: dict[str, float] = {}
            flowing.start_soon(_import_prices, tmp_path / "change.csv", sales_db, {SKU: 95}, change)
            # The survivor alone renews the timestamp now: every store verifies two renewals after the kill.
            await _every(stores, lambda s: s.versions and s.versions[-1] >= before + 2 and s.sent >= 20 * TILLS
                         and s.price(SKU) == 95)
            stop.set()
    sold = sum(s.sent for s in stores)
    with trio.fail_after(60):
        for n in range(STORES):  # the rest of the rollout: every till installed, answered through the one address
            for j in range(TILLS):
                await _announce(tracker, n, f"till-{j}", 0)
        operator = {"authorization": f"Bearer {token.read_text()}"}
        stats = (await tracker.get("/stats", headers=operator)).json()["releases"]["pos-os@2026.11"]
        totals = (await central.get("/sales/totals", headers=operator)).json()
        # Every store takes the release from the survivor: manifest, torrent and every chunk (its web seed).
        catalog = (await central.get("/catalog")).json()
        release_dir = releases / RELEASE[0] / RELEASE[1]
        for n in range(STORES):
            for name in (MANIFEST_NAME, TORRENT_NAME, *(chunk_relpath(c.digest) for c in seeded.unique_chunks())):
                got = await central.get(f"/releases/{RELEASE[0]}/{RELEASE[1]}/{name}")
                assert got.status_code == 200 and got.content == (release_dir / name).read_bytes(), (n, name)
    await tracker.aclose()
    await central.aclose()
    lost = max(s.longest_gap_s(killed_at) for s in stores)
    price_s = max(s.price_at[(SKU, 95)] for s in stores) - change["began"]
    print(f"central failover: {sold} sales, {sum(s.resent for s in stores)} batches resent, timestamp "
          f"v{before} -> v{min(s.versions[-1] for s in stores)}, longest wait for an answer around the kill {lost:.2f} s"
          f"; a price change imported after the kill (`sku import` ran {change['ended'] - change['began']:.2f} s) held"
          f" by every cache {price_s:.2f} s after the import began")
    # The signer died with seeder-1; the survivor took its turn over and signed the change.
    assert SIGNER_TURN in (tmp_path / "seeder-2.log").read_text()
    # No cache ever saw central's signed state go back, whichever seeder answered; none was refused.
    for store in stores:
        assert store.refused == [] and store.versions == sorted(store.versions), (store.id, store.refused, store.versions)
    assert totals == {"sales": sold, "cents": sum(s.cents for s in stores)}, totals  # none lost, none twice
    # Both renewed the one timestamp all along, and no version was signed twice (by both at once).
    signed = {i: (tmp_path / f"seeder-{i}.log").read_text().count("event='tuf.timestamp'") for i in (1, 2)}
    final = json.loads((releases / ".tuf" / "timestamp.json").read_bytes())["signed"]["version"]
    assert signed[1] >= 1 and signed[2] >= 1 and sum(signed.values()) <= final - 1, (signed, final)
    assert stats["stores_total"] == STORES and stats["devices_installed"] == STORES * TILLS
    assert [(e["name"], e["version"]) for e in catalog["releases"]] == [RELEASE], catalog


async def test_tracker_tls_passed_through_the_proxy_reaches_a_tracker_with_the_node_certificate(
        nursery, tmp_path, redis_url):  # noqa: F811
    releases, keys_dir = tmp_path / "releases", tmp_path / "keys"
    keys_dir.mkdir()
    keys = init_keys(keys_dir, releases)
    cert, key = keys.issue_tls(["127.0.0.1"])
    config = tmp_path / "tracker.toml"
    config.write_text(f'listen = "127.0.0.1:0"\nopen = true\npeer_store = "redis"\nredis_url = "{redis_url}"\n'
                      f'interval = 5\ntls_cert = "{cert}"\ntls_key = "{key}"\nnode_ca = "{keys.authority}"\n'
                      f'operator_token_file = "{write_operator_token(tmp_path / "operator.token")}"\n')
    pids: dict[str, int] = {}
    tls_front = _free_port()
    with trio.fail_after(60):
        trackers = [await nursery.start(partial(run_process, f"tracker-{i}",
                                                [bin_path("posswarm-tracker"), "serve", "--config", str(config)],
                                                tmp_path / f"tracker-{i}.log", kind="tracker", pids=pids))
                    for i in (1, 2)]
        await _haproxy(nursery, tmp_path, [], _free_port(), tls_trackers=trackers, tls_front=tls_front)
        caches = []
        for n in range(STORES):  # each store's cache with its certificate, the store it is in named only there
            identity = keys.enrol(tmp_path / f"cache-{n}", node_id="cache", store=f"S{n:04d}", role="cache",
                                  device_class="cache")
            context = central_context(keys.authority)
            context.load_cert_chain(identity / "node.crt", identity / "node.key")
            caches.append(context)

        async def announce(n: int, claimed_store: int | None = None) -> dict:
            # A connection per announce: none stays on the tracker that dies.
            async with httpx.AsyncClient(base_url=f"https://127.0.0.1:{tls_front}", verify=caches[n], timeout=10,
                                         limits=httpx.Limits(max_keepalive_connections=0)) as client:
                return await _announce(client, n, "cache", 0, claimed_store=claimed_store)

        while True:  # HAProxy up and its checks of both trackers passed
            try:
                await announce(0)
                break
            except httpx.TransportError:
                await trio.sleep(0.1)
        for n in range(STORES):
            await announce(n)
        os.kill(pids["tracker-1"], signal.SIGKILL)
        for _ in range(3):  # every announce after the kill is answered, whichever tracker the proxy tried first
            for n in range(STORES):
                await announce(n)
        # The tracker knew each cache by its certificate, not by what it claimed: another store is refused
        # (an open tracker takes the claim of a client it does not know).
        refusal = (await announce(0, claimed_store=1))[b"failure reason"].decode()
    assert "store=S0001 is not the certificate's store S0000" in refusal, refusal
