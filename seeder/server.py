"""``posswarm-seeder serve``: seed every verified release under RELEASES and serve the central catalog."""

from __future__ import annotations

import gc
import socket
import ssl
from functools import partial
from pathlib import Path

import trio

from posswarm import http_service, logs
from posswarm.announce import NodeIdentity, ReleaseReport
from posswarm.announcer import Announcer
from posswarm.catalog.http import catalog_app
from posswarm.catalog.shelf import Shelf
from posswarm.endpoint import parse_endpoint
from posswarm.errors import PosswarmError
from posswarm.identity import revocations
from posswarm.identity.revocations import RevokedNodes
from posswarm.identity.tls import central_context
from posswarm.keys import KeyRing, load_private_key, load_public_key
from posswarm.operator_gate import read_token
from posswarm.release import MANIFEST_NAME, TORRENT_NAME, verify_release
from posswarm.service import run_until_signalled
from posswarm.torrent.session import SessionConfig, TorrentSession
from posswarm.trust.roles import role_public_keys
from seeder import repository_watch
from seeder.rollout_watch import RolloutWatch
from seeder.tuf_repository import DEFAULT_TIMESTAMP_EXPIRY_S, Repository

log = logs.get("seeder")

# A scan of already-seen release dirs is a glob and set lookups; at 2 s it was ~1 s of every
# rollout's latency on average (posswarm-netsim: cache learned of a release 1.47 s after publish). A change to
# the signed state wakes it at once (seeder/repository_watch.py); this period is for what inotify cannot see.
SCAN_EVERY_S = 0.5
# A store cache keeps its connection between batches: with hypercorn's 5 s, a cache whose next batch came later
# met a closed connection and a new TLS handshake (posswarm-bench sales-ingest, 1,000 caches: 404 requests cut
# off and 85 us of central's CPU per sale; with 75 s: none, 69 us).
KEEP_ALIVE_S = 75.0
# Python's cycle collector ran after every 700 new objects and, as the batches waiting for a commit aged into the
# oldest generation, walked all of it again and again: 34 % of central's CPU under 1,000 caches at 10,000 sales/s
# (posswarm-bench sales-ingest --rate 10000; 16 full collections of 216 ms each). Central's own objects, made at
# start, are set aside from it (gc.freeze), and it runs after this many new objects instead.
GC_YOUNG = 50_000


class Seeder:
    """Central: watches the releases directory, verifies what appears there, seeds it and lists it."""

    def __init__(self, releases: Path, public_key_path: Path | None = None, *, http: tuple[str, int], bt: tuple[str, int],
                 tracker_url: str = "", web_seeds: tuple[str, ...] = (), super_seed: bool = False, data_dir: Path | None = None, sales_db: str = "", sku_db: str = "",
                 timestamp_key: Path | None = None, timestamp_expiry_s: float = DEFAULT_TIMESTAMP_EXPIRY_S,
                 tls: ssl.SSLContext | None = None, tracker_tls: ssl.SSLContext | bool = True, sku_key: Path | None = None,
                 enrolment_key: Path | None = None, operator_token_file: Path | None = None) -> None:
        self.releases = releases
        # Store data (sales ingest, SKU catalog) lives beside the releases unless told otherwise.
        self.data_dir = data_dir or releases.parent / "central-data"
        self.sales_db = sales_db or str(self.data_dir / "sales.sqlite")
        self.sku_db = sku_db or str(self.data_dir / "sku.sqlite")
        # The release keys of RELEASES/.tuf's root (they change with `keys rotate`); a bare central.pub
        # only where there is no repository yet (nodes take nothing from such a seeder: nothing is signed).
        self.repository = Repository(releases)
        self._legacy = [load_public_key(public_key_path)] if public_key_path is not None else []
        self.public_key = KeyRing(self._legacy)
        self._root_stamp: tuple | None = None
        self._files_stamp: tuple | None = None
        self._files: dict[str, bytes] = {}
        # One reading of .tuf at a time: two could offer their files out of order (an older one last).
        self._following = trio.Lock()
        self._changed = trio.Event()  # set by the repository watch: scan now, not at the next period
        self.timestamp_key = timestamp_key
        if timestamp_expiry_s < 2:  # seconds only make sense in tests; central runs with hours or a day
            raise PosswarmError(f"--timestamp-expiry-s {timestamp_expiry_s}: too short (use at least 2 s; default 1 day)")
        self.timestamp_expiry_s = timestamp_expiry_s
        self.sku_key = sku_key  # signs every SKU entry served (KEYS/sku.key); without it none is served
        self.enrolment_key = enrolment_key  # signs the certificates `posswarm enroll` asks for with a token
        self.operator_token = read_token(operator_token_file) if operator_token_file else None
        self.enrolment_keys: list = []  # of RELEASES/.tuf's root: what a cache's certificate must be signed by
        self.revoked = RevokedNodes()  # of RELEASES/.tuf's targets: node certificates no longer believed
        self.http = http
        self.tls = tls
        self.tracker_tls = tracker_tls  # verifies an https:// tracker (central's own certificate, usually)
        self.bt = bt
        self.tracker_url = tracker_url
        for seed in web_seeds:
            if seed != "self" and not seed.startswith(("http://", "https://")):
                raise PosswarmError(f"--web-seed {seed!r}: use 'self' or an http(s):// URL serving a copy of RELEASES")
        self.web_seeds = tuple(web_seeds)
        self.super_seed = super_seed
        self.shelf = Shelf()
        self.rollouts = RolloutWatch(self.public_key)  # rollout.msgpack changes after publish (release promote ...)
        self.rejected: dict[Path, str] = {}
        self.url: str | None = None
        self.torrents: TorrentSession | None = None
        self.announcer: Announcer | None = None

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        if not self.releases.is_dir():
            raise PosswarmError(f"releases directory {self.releases} does not exist (publish a release into it first)")
        session = TorrentSession(SessionConfig(listen_ip=self.bt[0], listen_port=self.bt[1]))
        async with trio.open_nursery() as nursery:
            self.torrents = await nursery.start(session.run)
            nursery.start_soon(self._drain, session.subscribe())
            self.shelf.seeds = (f"{self.bt[0]}:{self.torrents.listen_port}",)
            await self.scan()
            store_routes = await trio.to_thread.run_sync(self._store_data_routes)
            await nursery.start(self.sales_writer.run)
            if self.sku_key is not None:
                from seeder import sku

                await nursery.start(sku.sign_forever, self.sku_catalog, self.sku_key, self.repository)
            app = catalog_app(self.shelf, extra_routes=store_routes, tuf_file=self.tuf_file)
            self.url = await nursery.start(partial(http_service.run, app,
                                                   *self.http, ssl_context=self.tls,
                                                   keep_alive_s=KEEP_ALIVE_S))
            # "self" stands for this seeder's own HTTP, which answers Range on every chunk (BEP 19)
            self.shelf.web_seeds = tuple(self.url if seed == "self" else seed for seed in self.web_seeds)
            if self.tracker_url:
                # One peer id per seeder: two seeders behind one tracker address are both handed out, not one.
                seeder_id = f"central-seeder-{socket.gethostname()[:32]}-{self.torrents.listen_port}"
                who = NodeIdentity(seeder_id, "central", "seeder", "seeder", self.bt[0], self.torrents.listen_port)
                self.announcer = Announcer(self.tracker_url, who, self._reports, lambda report, peers: None,
                                           verify=self.tracker_tls)
                await nursery.start(self.announcer.run)
            nursery.start_soon(self._scan_forever)
            await nursery.start(repository_watch.run, self.repository.dir, lambda: self._changed.set())
            gc.freeze()
            gc.set_threshold(GC_YOUNG, *gc.get_threshold()[1:])
            log.info("listening", url=self.url, bt=self.shelf.seeds[0], releases=len(self.shelf.manifests()))
            task_status.started(self)

    def _store_data_routes(self) -> list:
        from seeder import enrolment_http, sales, sales_stream_http, sku
        from seeder.enrolment_tokens import TokenBook
        from seeder.sales_writer import SalesWriter

        self.sales = sales.open_sales(self.sales_db)
        self.sales_writer = SalesWriter(self.sales)
        self.sku_catalog = sku.open_catalog(self.sku_db)
        tokens = TokenBook(self.data_dir) if self.enrolment_key is not None else None
        operator = sales.operator_gate(self.operator_token)  # one gate: wrong guesses count across its endpoints
        return (sales.routes(self.sales_writer, lambda: self.enrolment_keys, operator, self.revoked)
                + sales_stream_http.routes(sales.open_sales(self.sales_db), operator) + sku.routes(self.sku_catalog)
                + enrolment_http.routes(tokens, self.enrolment_key))

    async def scan(self) -> None:
        """Verify and start seeding every release directory not seen yet (publish renames them into place)."""
        await self._follow_repository()
        await self.rollouts.refresh(self.shelf)
        for manifest_path in sorted(self.releases.glob(f"*/*/{MANIFEST_NAME}")):
            directory = manifest_path.parent
            key = (directory.parent.name, directory.name)
            if key in self.shelf or directory in self.rejected or not await self.rollouts.ready(directory):
                continue
            try:
                manifest = await trio.to_thread.run_sync(verify_release, directory, self.public_key)
                await self.torrents.add(f"{manifest.name}@{manifest.version}",
                                        (directory / TORRENT_NAME).read_bytes(), directory,
                                        super_seed=self.super_seed, verified=True)
            except PosswarmError as exc:
                self.rejected[directory] = str(exc)
                log.error("release.rejected", dir=str(directory), reason=str(exc))
                continue
            self.shelf.put(manifest, directory)
            self.rollouts.track(self.shelf, directory)
            log.info("release.seeding", release=manifest.release_id, size=manifest.total_size)
            if self.announcer:
                self.announcer.kick()
        # Offered after the releases (set here in trio: the shelf wakes the catalog's long polls): a cache that
        # reads the new signed state finds its release served. Offered first, the cache's manifest fetch got a
        # 404 and came back only 0.7 s later (posswarm-netsim, 48 MiB; a poll period in production).
        self._offer_repository()

    def _offer_repository(self) -> None:
        if self.shelf.tuf is not self._files:
            self.shelf.tuf = self._files

    async def tuf_file(self, name: str) -> bytes | None:
        """One of central's signed files under ``/tuf/``, never older than the shared RELEASES holds when asked:
        behind a proxy alternating between two seeders, a node that read version N never gets N-1 next."""
        try:
            stamp = await trio.to_thread.run_sync(self.repository.stamp)
        except OSError:
            stamp = None  # a file replaced while listed: read them all again
        if stamp is None or stamp != self._files_stamp:
            await self._follow_repository()
        # What this seeder read is offered now, even while its scan still verifies a release the new targets
        # list (a manifest fetch may then meet a 404 and be retried): the other seeder may have offered it.
        self._offer_repository()
        return self.shelf.tuf.get(name)

    async def _follow_repository(self) -> None:
        """Take a rotated root's release keys, renew the timestamp (new snapshot, new root, half its life
        gone) with the online key, and read the repository's files to offer under ``/tuf/`` when they changed."""
        async with self._following:
            if not await trio.to_thread.run_sync(self.repository.exists):
                return
            try:
                await trio.to_thread.run_sync(self._follow_repository_sync)
            except (PosswarmError, OSError, ValueError) as exc:
                log.error("tuf.unavailable", dir=str(self.repository.dir), reason=str(exc).splitlines()[0][:300])
                return

    def _follow_repository_sync(self) -> None:
        st = (self.repository.dir / "root.json").stat()
        if (st.st_mtime_ns, st.st_size, st.st_ino) != self._root_stamp:
            self.public_key.replace(self.repository.keyring().keys() or self._legacy)
            self.enrolment_keys = role_public_keys(self.repository.root().signed, "enrolment")
            self._root_stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            log.info("tuf.root", version=self.repository.root().signed.version, release_keys=self.public_key.ids())
        if self.timestamp_key is not None:
            # Read each time: `keys rotate timestamp` replaces the file under the running seeder. Under the
            # repository's lock: a second seeder on the same RELEASES then finds the renewed one and signs none.
            with self.repository.lock():
                if self.repository.renew_timestamp(load_private_key(self.timestamp_key), self.timestamp_expiry_s):
                    log.info("tuf.timestamp", expires_in_s=self.timestamp_expiry_s)
        stamp = self.repository.stamp()
        if stamp == self._files_stamp:  # targets.json can be megabytes: read again only when it changed
            return
        files, self._files_stamp = self.repository.files(), stamp
        self._take_revocations(files["targets.json"])
        self._files = files

    def _take_revocations(self, targets: bytes) -> None:
        """The revocation list of central's own signed targets; a copy that does not verify keeps the one before."""
        try:
            _, entries = revocations.verify(targets, self.repository.root().signed, now=None)
        except revocations.RevocationError as exc:
            log.error("revocations.refused", reason=str(exc))
            return
        if len(entries) != len(self.revoked):
            log.info("revocations", nodes=len(entries))
        self.revoked.replace(entries)

    async def _scan_forever(self) -> None:
        while True:
            with trio.move_on_after(SCAN_EVERY_S):
                await self._changed.wait()
            self._changed = trio.Event()
            await self.scan()

    async def _drain(self, events) -> None:
        async for event in events:
            log.debug("torrent.event", what=repr(event))

    def _reports(self) -> list[ReleaseReport]:
        reports = []
        for m in self.shelf.manifests():
            p = self.torrents.progress(f"{m.name}@{m.version}")
            reports.append(ReleaseReport(m.name, m.version, m.info_hash_v1, m.stored_size, 0, 0, 0, p.upload_bytes, True))
        return reports


def server_tls(args) -> ssl.SSLContext | None:
    """HTTPS unless the operator explicitly chose plain HTTP (a TLS-terminating proxy in front)."""
    cert, key, plain = getattr(args, "tls_cert", None), getattr(args, "tls_key", None), getattr(args, "plain_http", False)
    if plain:
        if cert or key:
            raise PosswarmError("serve: --plain-http and --tls-cert/--tls-key contradict each other; pick one")
        log.warning("http.plain", fix="only behind a TLS-terminating proxy: catalog, SKU prices and sales would "
                    "otherwise cross the WAN readable and rewritable")
        return None
    if not (cert and key):
        raise PosswarmError("serve: central serves HTTPS; give --tls-cert and --tls-key (`posswarm-seeder keys tls "
                            "--keys KEYS --host NAME` makes them), or --plain-http behind a TLS-terminating proxy")
    for what, path in (("--tls-cert", cert), ("--tls-key", key)):
        if not Path(path).is_file():
            raise PosswarmError(f"serve: {what} {path} does not exist (`posswarm-seeder keys tls` makes it)")
    try:
        return http_service.server_context(Path(cert), Path(key))
    except (OSError, ssl.SSLError) as exc:
        raise PosswarmError(f"serve: --tls-cert {cert} / --tls-key {key}: cannot use them ({exc}); are they a "
                            "certificate chain and its key (`posswarm-seeder keys tls`)?") from None


def serve_main(args) -> int:
    """Entry for the ``serve`` subcommand (argparse namespace from seeder.cli)."""
    seeder = Seeder(
        Path(args.releases),
        Path(args.key_pub) if getattr(args, "key_pub", None) else None,
        http=parse_endpoint(args.listen, what="--listen", example="0.0.0.0:8080", any_port=True),
        bt=parse_endpoint(args.bt_listen, what="--bt-listen", example="0.0.0.0:6881", any_port=True),
        tracker_url=getattr(args, "tracker", "") or "",
        web_seeds=tuple(getattr(args, "web_seed", None) or ()),
        super_seed=bool(getattr(args, "super_seed", False)),
        data_dir=getattr(args, "data_dir", None),
        sales_db=getattr(args, "sales_db", "") or "",
        sku_db=getattr(args, "sku_db", "") or "",
        timestamp_key=getattr(args, "timestamp_key", None),
        timestamp_expiry_s=getattr(args, "timestamp_expiry_s", DEFAULT_TIMESTAMP_EXPIRY_S),
        tls=server_tls(args),
        tracker_tls=central_context(args.tracker_ca) if getattr(args, "tracker_ca", None) else True,
        sku_key=getattr(args, "sku_key", None),
        enrolment_key=getattr(args, "enrolment_key", None),
        operator_token_file=getattr(args, "operator_token_file", None),
    )
    if seeder.enrolment_key is not None:
        load_private_key(seeder.enrolment_key)  # a wrong path stops serve now, not at the first till's enrolment
    if seeder.operator_token is None:
        log.warning("operator.endpoints_off", fix="pass --operator-token-file FILE to serve /sales/totals and "
                    "/sales/stream to operators holding that token; without it they are refused")
    if seeder.timestamp_key is None:
        log.warning("tuf.no_timestamp_key", fix="pass --timestamp-key (keys/timestamp.key): without it central's "
                    "timestamp is never renewed and every node stops installing once it expires")
    if seeder.sku_key is None:
        log.warning("sku.no_signing_key", fix="pass --sku-key (keys/sku.key): without it no SKU entry is signed, "
                    "so none is served and the stores keep the prices they have")

    return run_until_signalled(seeder.run, program="posswarm-seeder")
