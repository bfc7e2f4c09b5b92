"""The tracker's settings, their defaults, and loading them from a TOML file."""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import string
from pathlib import Path

from posswarm.endpoint import parse_endpoint
from posswarm.errors import PosswarmError
from posswarm.toml_file import load_toml
from tracker import announce, handout, isolation


@dataclasses.dataclass(frozen=True)
class TrackerConfig:
    """Every key of the tracker's TOML file (top-level keys), with its default.

    host, port     -- where to listen; ``listen = "HOST:PORT"`` in TOML (default 127.0.0.1:6969; port 0 = any free port)
    interval       -- seconds a client should wait between announces (default 30)
    min_interval   -- seconds a client must wait at least between announces (default min(10, interval))
    policy         -- peer hand-out policy: "store-first" (default) or "completeness"
    cross_store    -- store-first: may a store's cache be handed other stores' caches? (default false)
    peer_ttl       -- shortest time a quiet peer is still handed out, in seconds (default 3 x interval)
    max_peer_ttl   -- longest time a quiet peer is still handed out (default 1800): within peer_ttl..max_peer_ttl a
                      peer stays 3 x its own observed re-announce gap (rtorrent waits 600 s whatever it is told)
    retain         -- seconds a node's last announce is kept for /stats after it went quiet (default 86400)
    max_records    -- most announce records the tracker keeps in all (default 1000000)
    max_records_per_store -- most records one store's passkey may hold (default 10000)
    numwant        -- peers handed out when the client does not say (default 50)
    max_numwant    -- most peers handed out whatever the client asks (default 200)
    max_query      -- longest accepted query string in bytes (default 4096)
    udp            -- ``"HOST:PORT"`` for the BEP 15 UDP tracker (default none: HTTP only; port 0 = any free port)
    open           -- accept any torrent without a passkey, like a public tracker (default false: private)
    catalog        -- private mode: the seeder's catalog URL, polled for the published info-hashes (required then)
    catalog_poll   -- seconds between catalog polls (default 30)
    tls_cert, tls_key -- the announce port's TLS certificate chain and key: central's (``posswarm-seeder keys tls
                      --host NAME`` writes KEYS/tls.crt and tls.key); required unless plain_http (default none)
    plain_http     -- serve announces over plain HTTP: standard clients only, or behind a TLS-terminating proxy;
                      said in the log at start (default false)
    node_ca        -- the enrolment authority's certificate(s) (KEYS/enrolment-ca.crt): a client certificate
                      under it places the announce by its node id, store and role; default none (passkeys only)
    root_of_trust  -- central's root of trust (root.json, the one nodes hold): the tracker follows central's signed
                      state from the catalog's seeder with it and refuses node certificates central revoked; default
                      none (no revocation check, said in the log at start when node_ca is set). Needs node_ca and
                      catalog (in open mode too, where the catalog is read for this alone)
    catalog_ca     -- CA certificate the seeder's HTTPS must chain to (default: the system's; posswarm's central
                      certificate is under KEYS/enrolment-ca.crt)
    passkeys       -- private mode: table store id -> passkey; nodes announce to /announce/<passkey>
    central_passkeys -- private mode: passkeys of central's seeders, the only ones that may announce role=seeder
                      (and be handed every store's caches); default none. Every passkey: at least 128 bits
                      (e.g. 22 characters of ``python3 -c 'import secrets; print(secrets.token_urlsafe(16))'``)
    passkey_guesses -- wrong passkeys an address may send per minute before it is refused outright (default 20)
    trusted_proxies -- CIDRs whose ``ip=`` is believed for every viewer (default ["127.0.0.0/8", "::1/128"]);
                      from anyone else ``ip=`` is only handed to the announcer's own store (its LAN address)
    stats_every    -- seconds between rebuilds of the /stats, dashboard and /metrics snapshot (default 2)
    max_connections -- HTTP connections open at once (default 32768: every node keeps its announce connection,
                      ~40 KB each over TLS, measured; the open-files limit is raised to fit at start)
    max_connections_per_address -- HTTP connections one address may hold (default 256: a store's NAT)
    header_timeout -- seconds a client has to send a whole request head once it started one (default 10)
    idle_timeout   -- seconds a kept-alive connection may wait for its next request (default 2 x interval); must be
                      above interval, so a node's certified connection lives from one announce round to the next
    peer_store     -- "memory" (default; one process) or "redis" (several trackers share one swarm view)
    redis_url      -- peer_store = "redis": where (default "redis://127.0.0.1:6379/0")
    operator_token_file -- file holding the operator token /stats, /metrics, the dashboard and store pages require
                      (Bearer, or Basic with the token as password); default none, and then the tracker refuses to
                      start unless open_stats is true
    open_stats     -- show /stats, /metrics and the dashboard to anyone who reaches the tracker (default false)
    """

    host: str = "127.0.0.1"
    port: int = 6969
    interval: int = 30
    min_interval: int | None = None
    policy: str = "store-first"
    cross_store: bool = False
    peer_ttl: int | None = None
    max_peer_ttl: int = 1800
    retain: int = 86400
    max_records: int = 1_000_000
    max_records_per_store: int = 10_000
    numwant: int = 50
    max_numwant: int = 200
    max_query: int = 4096
    udp: str | None = None
    open: bool = False
    catalog: str | None = None
    catalog_poll: int = 30
    catalog_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    plain_http: bool = False
    node_ca: str | None = None
    root_of_trust: str | None = None
    passkeys: dict[str, str] = dataclasses.field(default_factory=dict)
    central_passkeys: list[str] = dataclasses.field(default_factory=list)
    passkey_guesses: int = 20
    trusted_proxies: list[str] = dataclasses.field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])
    stats_every: float = 2.0
    max_connections: int = 32768
    max_connections_per_address: int = 256
    header_timeout: int = 10
    idle_timeout: int | None = None
    peer_store: str = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    operator_token_file: str | None = None
    open_stats: bool = False

    @property
    def effective_min_interval(self) -> int:
        return self.min_interval if self.min_interval is not None else min(10, self.interval)

    @property
    def udp_address(self) -> tuple[str, int] | None:
        return parse_listen(self.udp) if self.udp is not None else None

    @property
    def effective_idle_timeout(self) -> int:
        # A node announces every interval over the connection it keeps (a new TLS handshake is ~1.3 ms of tracker
        # CPU); twice that lets one late round still find it open.
        return self.idle_timeout if self.idle_timeout is not None else 2 * self.interval

    @property
    def effective_peer_ttl(self) -> int:
        # Three missed intervals: one lost announce must not drop a healthy peer.
        return self.peer_ttl if self.peer_ttl is not None else 3 * self.interval


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` -> (host, port); PosswarmError when malformed (port 0 = any free port)."""
    return parse_endpoint(text, what="listen address", example="0.0.0.0:6969", any_port=True)


_INT_KEYS = {"interval", "min_interval", "peer_ttl", "max_peer_ttl", "retain", "numwant", "max_numwant", "max_query",
             "catalog_poll", "max_records", "max_records_per_store", "passkey_guesses",
             "max_connections", "max_connections_per_address", "header_timeout", "idle_timeout"}
MIN_PASSKEY_BITS = 128
_ALPHABETS = ((string.digits, 10), (string.hexdigits, 16), (string.ascii_letters + string.digits, 62))


def passkey_bits(passkey: str) -> float:
    """What a passkey can hold at most: its length times the bits of the smallest alphabet it is drawn from."""
    for alphabet, size in _ALPHABETS:
        if all(c in alphabet for c in passkey):
            return len(passkey) * math.log2(size)
    return len(passkey) * math.log2(66)  # announce.PASSKEY's letters, digits and - _ . ~


def _check_passkeys(config: TrackerConfig) -> None:
    entries = dict(config.passkeys) if isinstance(config.passkeys, dict) else None
    if entries is None or not all(isinstance(k, str) and isinstance(v, str) and announce.PASSKEY.fullmatch(v)
                                  for k, v in entries.items()):
        raise PosswarmError("tracker config [passkeys]: each entry must be store = \"passkey\" (letters, digits, - _ . ~)")
    if isolation.CENTRAL in entries:
        raise PosswarmError(f"tracker config [passkeys] {isolation.CENTRAL}: central's seeders have their own credential "
                            f"now; move that passkey to central_passkeys = [\"...\"]")
    central = config.central_passkeys
    if not isinstance(central, list) or not all(isinstance(k, str) and announce.PASSKEY.fullmatch(k) for k in central):
        raise PosswarmError("tracker config central_passkeys: must be a list of passkeys (letters, digits, - _ . ~)")
    named = [(f"[passkeys] {store}", key) for store, key in entries.items()]
    named += [(f"central_passkeys[{i}]", key) for i, key in enumerate(central)]
    for name, key in named:
        if passkey_bits(key) < MIN_PASSKEY_BITS:
            raise PosswarmError(
                f"tracker config {name}: passkey holds {passkey_bits(key):.0f} bits, at least {MIN_PASSKEY_BITS} are "
                "needed (make one with: python3 -c 'import secrets; print(secrets.token_urlsafe(16))')")
    if len({key for _, key in named}) != len(named):
        raise PosswarmError("tracker config: two entries share a passkey (give each store, and central, its own)")
PEER_STORES = ("memory", "redis")


def validate(config: TrackerConfig) -> TrackerConfig:
    """Reject settings that cannot work, naming the key; returns ``config`` unchanged."""
    for key in _INT_KEYS:
        value = getattr(config, key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise PosswarmError(f"tracker config {key} = {value!r}: must be a whole number >= 1 (fix the config file or flag)")
    if isinstance(config.stats_every, bool) or not isinstance(config.stats_every, int | float) or not (
            0 < config.stats_every <= 3600):
        raise PosswarmError(f"tracker config stats_every = {config.stats_every!r}: must be seconds in (0, 3600], e.g. 2")
    if config.effective_min_interval > config.interval:
        raise PosswarmError(
            f"tracker config min_interval = {config.min_interval} is above interval = {config.interval} (lower min_interval)"
        )
    if config.effective_idle_timeout <= config.interval:
        raise PosswarmError(
            f"tracker config idle_timeout = {config.idle_timeout} is not above interval = {config.interval}: every "
            "announce round would pay a new TLS handshake (raise idle_timeout, or leave it out for 2 x interval)")
    if config.numwant > config.max_numwant:
        raise PosswarmError(f"tracker config numwant = {config.numwant} is above max_numwant = {config.max_numwant}")
    if not isinstance(config.cross_store, bool):
        raise PosswarmError(f"tracker config cross_store = {config.cross_store!r}: must be true or false")
    if not isinstance(config.policy, str):
        raise PosswarmError(f"tracker config policy = {config.policy!r}: must be a policy name like \"store-first\"")
    handout.policy(config.policy)  # unknown name = error at start-up
    if not isinstance(config.open, bool):
        raise PosswarmError(f"tracker config open = {config.open!r}: must be true or false")
    if config.udp is not None:
        if not isinstance(config.udp, str):
            raise PosswarmError(f"tracker config udp = {config.udp!r}: must be a string like \"0.0.0.0:6969\"")
        parse_listen(config.udp)
    _check_passkeys(config)
    if not isinstance(config.trusted_proxies, list) or not all(isinstance(n, str) for n in config.trusted_proxies):
        raise PosswarmError("tracker config trusted_proxies: must be a list of CIDRs like [\"10.0.0.5/32\"]")
    for network in config.trusted_proxies:
        try:
            ipaddress.ip_network(network)
        except ValueError:
            raise PosswarmError(f"tracker config trusted_proxies: {network!r} is not a CIDR like \"10.0.0.5/32\"") from None
    if config.max_peer_ttl < config.effective_peer_ttl:
        raise PosswarmError(f"tracker config max_peer_ttl = {config.max_peer_ttl} is below peer_ttl = "
                            f"{config.effective_peer_ttl} (raise max_peer_ttl)")
    for key in ("catalog", "redis_url"):
        value = getattr(config, key)
        if value is not None and (not isinstance(value, str) or "://" not in value):
            raise PosswarmError(f"tracker config {key} = {value!r}: must be a URL like \"http://seeder:8080/catalog\"")
    if not config.open and not config.catalog:
        raise PosswarmError("tracker: private mode needs catalog = \"http://seeder:PORT/catalog\" (or run with --open)")
    if config.catalog_ca is not None and not Path(config.catalog_ca).is_file():
        raise PosswarmError(f"tracker config catalog_ca = {config.catalog_ca!r}: no such file (the CA certificate "
                            "central's HTTPS is under, e.g. KEYS/enrolment-ca.crt)")
    if config.operator_token_file is not None and not isinstance(config.operator_token_file, str):
        raise PosswarmError(f"tracker config operator_token_file = {config.operator_token_file!r}: must be a path")
    if not isinstance(config.open_stats, bool):
        raise PosswarmError(f"tracker config open_stats = {config.open_stats!r}: must be true or false")
    if config.open_stats and config.operator_token_file:
        raise PosswarmError("tracker config: open_stats and operator_token_file both set (keep the token file: "
                            "open_stats shows the stats to anyone)")
    _check_tls(config)
    if config.peer_store not in PEER_STORES:
        raise PosswarmError(f"tracker config peer_store = {config.peer_store!r}: choose memory or redis")
    return config


def _check_tls(config: TrackerConfig) -> None:
    if not isinstance(config.plain_http, bool):
        raise PosswarmError(f"tracker config plain_http = {config.plain_http!r}: must be true or false")
    for key in ("tls_cert", "tls_key", "node_ca"):
        value = getattr(config, key)
        if value is not None and (not isinstance(value, str) or not Path(value).is_file()):
            raise PosswarmError(f"tracker config {key} = {value!r}: no such file (`posswarm-seeder keys tls --keys KEYS "
                                "--host NAME` writes tls.crt and tls.key; the node CA is KEYS/enrolment-ca.crt)")
    if (config.tls_cert is None) != (config.tls_key is None):
        raise PosswarmError("tracker config: tls_cert and tls_key go together (central's KEYS/tls.crt and tls.key)")
    if config.plain_http and config.tls_cert is not None:
        raise PosswarmError("tracker config: plain_http and tls_cert/tls_key contradict each other; pick one")
    if config.root_of_trust is not None:
        if not isinstance(config.root_of_trust, str) or not Path(config.root_of_trust).is_file():
            raise PosswarmError(f"tracker config root_of_trust = {config.root_of_trust!r}: no such file (central's "
                                "root.json, written by `posswarm-seeder keys init`)")
        if config.node_ca is None or not config.catalog:
            raise PosswarmError("tracker config root_of_trust: it checks node certificates against the revocations "
                                "central's seeder serves; give node_ca and catalog too")
    if config.node_ca is not None and config.tls_cert is None:
        raise PosswarmError("tracker config node_ca: node certificates are read in the TLS handshake; give tls_cert "
                            "and tls_key too")


def require_tls_choice(config: TrackerConfig) -> TrackerConfig:
    """The rule ``posswarm-tracker serve`` starts under: announces over TLS, unless plain HTTP is asked for by name."""
    if config.tls_cert is None and not config.plain_http:
        raise PosswarmError("tracker: announces are served over HTTPS; give --tls-cert and --tls-key (`posswarm-seeder "
                            "keys tls --keys KEYS --host NAME` makes them), or --plain-http for standard clients only")
    return config


def load(path: str | Path, **overrides) -> TrackerConfig:
    """Read a TOML file (unknown keys are errors), apply non-None ``overrides``, validate."""
    data = load_toml(path, "tracker config", fix="check the path given to --config")
    return from_mapping(data, source=str(path), **overrides)


def from_mapping(data: dict, *, source: str = "tracker config", **overrides) -> TrackerConfig:
    """Build a validated config from TOML-shaped ``data`` plus non-None ``overrides``."""
    data = dict(data)
    fields = {f.name for f in dataclasses.fields(TrackerConfig)} - {"host", "port"}
    if "listen" in data:
        listen = data.pop("listen")
        if not isinstance(listen, str):
            raise PosswarmError(f"{source}: listen = {listen!r} must be a string like \"0.0.0.0:6969\"")
        data["host"], data["port"] = parse_listen(listen)
    unknown = sorted(set(data) - fields - {"host", "port"})
    if unknown:
        raise PosswarmError(f"{source}: unknown key {unknown[0]!r} (known: listen, {', '.join(sorted(fields))})")
    data.update({k: v for k, v in overrides.items() if v is not None})
    return validate(TrackerConfig(**data))
