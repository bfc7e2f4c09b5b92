"""The tracker's settings, their defaults, and loading them from a TOML file."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

from posswarm.errors import PosswarmError
from tracker import announce, handout


@dataclasses.dataclass(frozen=True)
class TrackerConfig:
    """Every key of the tracker's TOML file (top-level keys), with its default.

    host, port     -- where to listen; ``listen = "HOST:PORT"`` in TOML (default 127.0.0.1:6969; port 0 = any free port)
    interval       -- seconds a client should wait between announces (default 30)
    min_interval   -- seconds a client must wait at least between announces (default min(10, interval))
    policy         -- peer hand-out policy: "store-first" (default) or "completeness"
    cross_store    -- store-first: may a store's cache be handed other stores' caches? (default false)
    peer_ttl       -- seconds without an announce before a peer is no longer handed out (default 3 x interval)
    retain         -- seconds a node's last announce is kept for /stats after it went quiet (default 86400)
    numwant        -- peers handed out when the client does not say (default 50)
    max_numwant    -- most peers handed out whatever the client asks (default 200)
    max_query      -- longest accepted query string in bytes (default 4096)
    udp            -- ``"HOST:PORT"`` for the BEP 15 UDP tracker (default none: HTTP only; port 0 = any free port)
    open           -- accept any torrent without a passkey, like a public tracker (default false: private)
    catalog        -- private mode: the seeder's catalog URL, polled for the published info-hashes (required then)
    catalog_poll   -- seconds between catalog polls (default 30)
    passkeys       -- private mode: table store id -> passkey; nodes announce to /announce/<passkey>
                      (central seeders too: give them an entry of their own, e.g. central = "...")
    peer_store     -- "memory" (default; one process) or "redis" (several trackers share one swarm view)
    redis_url      -- peer_store = "redis": where (default "redis://127.0.0.1:6379/0")
    """

    host: str = "127.0.0.1"
    port: int = 6969
    interval: int = 30
    min_interval: int | None = None
    policy: str = "store-first"
    cross_store: bool = False
    peer_ttl: int | None = None
    retain: int = 86400
    numwant: int = 50
    max_numwant: int = 200
    max_query: int = 4096
    udp: str | None = None
    open: bool = False
    catalog: str | None = None
    catalog_poll: int = 30
    passkeys: dict[str, str] = dataclasses.field(default_factory=dict)
    peer_store: str = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"

    @property
    def effective_min_interval(self) -> int:
        return self.min_interval if self.min_interval is not None else min(10, self.interval)

    @property
    def udp_address(self) -> tuple[str, int] | None:
        return parse_listen(self.udp) if self.udp is not None else None

    @property
    def effective_peer_ttl(self) -> int:
        # Three missed intervals: one lost announce must not drop a healthy peer.
        return self.peer_ttl if self.peer_ttl is not None else 3 * self.interval


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` -> (host, port); PosswarmError when malformed."""
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise PosswarmError(f"listen address {text!r}: expected HOST:PORT, e.g. 0.0.0.0:6969 (port 0 = any free port)")
    return host, int(port)


_INT_KEYS = {"interval", "min_interval", "peer_ttl", "retain", "numwant", "max_numwant", "max_query", "catalog_poll"}
PEER_STORES = ("memory", "redis")


def validate(config: TrackerConfig) -> TrackerConfig:
    """Reject settings that cannot work, naming the key; returns ``config`` unchanged."""
    for key in _INT_KEYS:
        value = getattr(config, key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise PosswarmError(f"tracker config {key} = {value!r}: must be a whole number >= 1 (fix the config file or flag)")
    if config.effective_min_interval > config.interval:
        raise PosswarmError(
            f"tracker config min_interval = {config.min_interval} is above interval = {config.interval} (lower min_interval)"
        )
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
    if not isinstance(config.passkeys, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and announce.PASSKEY.fullmatch(v) for k, v in config.passkeys.items()
    ):
        raise PosswarmError("tracker config [passkeys]: each entry must be store = \"passkey\" (letters, digits, - _ . ~)")
    if len(set(config.passkeys.values())) != len(config.passkeys):
        raise PosswarmError("tracker config [passkeys]: two stores share a passkey (give each store its own)")
    for key in ("catalog", "redis_url"):
        value = getattr(config, key)
        if value is not None and (not isinstance(value, str) or "://" not in value):
            raise PosswarmError(f"tracker config {key} = {value!r}: must be a URL like \"http://seeder:8080/catalog\"")
    if not config.open and not config.catalog:
        raise PosswarmError("tracker: private mode needs catalog = \"http://seeder:PORT/catalog\" (or run with --open)")
    if config.peer_store not in PEER_STORES:
        raise PosswarmError(f"tracker config peer_store = {config.peer_store!r}: choose memory or redis")
    return config


def load(path: str | Path, **overrides) -> TrackerConfig:
    """Read a TOML file (unknown keys are errors), apply non-None ``overrides``, validate."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise PosswarmError(f"tracker config {path}: cannot read it ({exc.strerror}); check the path") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PosswarmError(f"tracker config {path}: not valid TOML ({exc}); fix the file") from None
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
