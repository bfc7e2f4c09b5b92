"""The node's configuration: one TOML file, every key documented with its default, checked at start-up."""

from __future__ import annotations

import ipaddress
import re
import shlex
import socket
from dataclasses import dataclass, field, fields
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from posswarm import wan_window
from posswarm.announce import shown_url
from posswarm.errors import PosswarmError
from posswarm.toml_file import load_toml
from posswarm.web_seed_trust import read_certificates

ROLES = ("cache", "device")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")

#: Every key the node reads: TOML key -> (NodeConfig field, what it means). Defaults live on NodeConfig.
KEYS: dict[str, tuple[str, str]] = {
    "node.id": ("node_id", "stable id of this node; letters, digits, '.', '_', '-' (max 63); default: the hostname"),
    "node.role": ("role", "'cache' (one per store, the only WAN client) or 'device' (till, kiosk, back-office PC)"),
    "node.store": ("store", "store id this node belongs to, e.g. 'S042'"),
    "node.class": ("device_class", "device class releases can target: pos, kiosk, backoffice, ..."),
    "node.data_dir": ("data_dir", "where releases, chunks, installs and status.json live"),
    "node.address": ("address", "this node's IPv4 address on the store LAN; libtorrent, mDNS and HTTP bind to it"),
    "node.lan_network": ("lan_network", "CIDR of the store LAN, e.g. '10.20.0.0/16'; peers inside are store peers"),
    "node.bt_port": ("bt_port", "libtorrent listen port (0 = any free port)"),
    "node.http_port": ("http_port", "cache only: port of the store catalog the devices read (0 = any free port)"),
    "node.log_level": ("log_level", "debug, info, warning or error"),
    "central.root": ("root", "path of central's root of trust (root.json from `posswarm-seeder keys init`); the one thing trusted"),
    "node.identity_dir": ("identity_dir", "directory with this node's credential (node.key, node.crt, authority.crt"
                          " from `posswarm enroll` or `posswarm-seeder enroll`)"),
    "central.expiry_grace_s": ("expiry_grace_s", "seconds past the expiry of central's signed timestamp before new installs stop"),
    "central.catalog_url": ("catalog_url", "cache only: HTTPS URL of the central seeder, e.g. 'https://central:8080'"),
    "central.tls_ca": ("tls_ca", "CA certificate central's HTTPS must chain to; '' = the enrolment authority in"
                       " node.identity_dir (authority.crt)"),
    "central.web_seed_ca": ("web_seed_ca", "cache: CA bundle HTTPS web seeds other than central may chain to (a CDN's, e.g."
                            " /etc/ssl/certs/ca-certificates.crt); '' = central's CA only"),
    "central.tracker_url": ("tracker_url", "announce URL of the tracker ('' = do not announce)"),
    "store.cache_url": ("cache_url", "device only: the store cache's URL where mDNS is blocked ('' = find it by mDNS)"),
    "store.data": ("data", "true = run the store's sales and SKU data over gossip (mutual TLS with node.identity_dir's"
                   " credential)"),
    "store.gossip_key_file": ("gossip_key_file", "legacy: set = store.data true; the secret is no longer read (gossip"
                              " is mutual TLS)"),
    "store.gossip_seeds": ("gossip_seeds", "comma-separated HOST:PORT of store nodes to greet where mDNS is blocked"),
    "store.mdns": ("mdns", "find store peers by mDNS (false where the store network forbids multicast: set"
                   " store.cache_url, or a device asks the tracker for its store's caches)"),
    "store.gossip_port": ("gossip_port", "TCP port of the store gossip channel on node.address (0 = any free port)"),
    "store.api_port": ("api_port", "port of the local sales/SKU API on 127.0.0.1 (0 = any free port)"),
    "store.timezone": ("timezone", "the store's IANA time zone: trading days of sales and local time of wan.schedule"),
    "store.gossip_faults": ("gossip_faults", "TESTS ONLY: inject faults into sent frames, e.g. 'drop=0.3,dup=0.1'"),
    "timing.sku_poll_s": ("sku_poll_s", "cache: seconds between pulls of SKU changes from central"),
    "install.health_check": ("health_check", "device: command run after a switch; non-zero exit rolls back ('' = none)"),
    "install.post_install": ("post_install", "device: command run after a switch, before the health check ('' = none)"),
    "install.health_timeout_s": ("health_timeout_s", "seconds the health check may take before it counts as failed"),
    "install.privileged_hook": ("privileged_hook", "device: command root runs for the node after a switch, via"
                                " posswarm-activate.path ('' = no privileged path); see docs/deployment.md"),
    "install.privileged_timeout_s": ("privileged_timeout_s", "seconds the node waits for the privileged hook's result"),
    "install.slots": ("slots", "device: the two boot slots (A, B) an image release is written into, block devices or"
                      " files; [] = image releases install as directories like apps"),
    "install.bootloader": ("bootloader", "device with slots: 'grub', 'uboot' or 'command'; keeps the slot state"),
    "install.bootloader_env": ("bootloader_env", "grub: the grubenv file; uboot: the fw_env.config of the environment"),
    "install.env_get_command": ("env_get_command", "bootloader 'command': prints the environment as KEY=VALUE lines"),
    "install.env_set_command": ("env_set_command", "bootloader 'command': sets the KEY=VALUE arguments it is given"),
    "install.boot_cmdline": ("boot_cmdline", "device with slots: file with the kernel command line naming the booted"
                             " slot (posswarm.slot=a|b)"),
    "install.reboot_command": ("reboot_command", "device with slots: command that reboots into a slot just marked"
                               " ('' = reboot some other way, e.g. the till's nightly reboot)"),
    "install.window": ("install_window", "device: weekly store-local windows new releases may activate in, e.g."
                       " 'daily 02:00-04:00' ([] = any time)"),
    "wan.download_limit_kbps": ("wan_download_kbps", "cache: WAN download cap in kbit/s (0 = none); LAN is never capped"),
    "wan.upload_limit_kbps": ("wan_upload_kbps", "cache: WAN upload cap in kbit/s, i.e. to other stores' caches (0 = none)"),
    "wan.schedule": ("wan_schedule", "cache: weekly store-local windows capping the WAN, e.g. 'mon-fri 08:00-20:00 4000'"),
    "metrics.token_file": ("metrics_token_file", "cache: file with the token its /metrics requires (the caches' own,"
                           " not central's operator token); '' = /metrics refuses everyone (403)"),
    "timing.catalog_poll_s": ("catalog_poll_s", "seconds between catalog polls"),
    "timing.status_every_s": ("status_every_s", "seconds between rewrites of status.json"),
    "timing.scrub_every_s": ("scrub_every_s", "seconds between re-reads of every held chunk against its BLAKE3"),
}
REQUIRED = ("node.role", "node.store", "node.address", "node.lan_network", "central.root", "node.identity_dir")


@dataclass(frozen=True)
class NodeConfig:
    """A checked node configuration."""

    role: str
    store: str
    address: str
    lan_network: str
    root: Path
    node_id: str = field(default_factory=socket.gethostname)
    device_class: str = "pos"
    data_dir: Path = Path("/var/lib/posswarm")
    bt_port: int = 0
    http_port: int = 0
    log_level: str = "info"
    catalog_url: str = ""
    expiry_grace_s: float = 3600.0
    tracker_url: str = ""
    identity_dir: str = ""
    tls_ca: str = ""
    web_seed_ca: str = ""
    cache_url: str = ""
    mdns: bool = True
    data: bool = False
    gossip_key_file: str = ""
    gossip_seeds: str = ""
    gossip_port: int = 7946
    api_port: int = 7947
    timezone: str = "UTC"
    gossip_faults: str = ""
    sku_poll_s: float = 2.0
    health_check: str = ""
    health_timeout_s: float = 60.0
    post_install: str = ""
    privileged_hook: str = ""
    privileged_timeout_s: float = 300.0
    slots: tuple[str, ...] = ()
    bootloader: str = "grub"
    bootloader_env: str = ""
    env_get_command: str = ""
    env_set_command: str = ""
    boot_cmdline: str = "/proc/cmdline"
    reboot_command: str = ""
    install_window: tuple[str, ...] = ()
    wan_download_kbps: int = 0
    wan_upload_kbps: int = 0
    wan_schedule: tuple[str, ...] = ()
    metrics_token_file: str = ""
    catalog_poll_s: float = 10.0
    status_every_s: float = 1.0
    scrub_every_s: float = 21600.0

    @property
    def is_cache(self) -> bool:
        return self.role == "cache"

    @property
    def central_ca(self) -> Path | None:
        """What central's HTTPS certificate must chain to: central.tls_ca, else the credential's authority."""
        if self.tls_ca:
            return Path(self.tls_ca)
        return Path(self.identity_dir) / "authority.crt" if self.identity_dir else None

    @property
    def store_data(self) -> bool:
        """Whether this node runs the store's sales and SKU data (``store.data``, or the legacy key file)."""
        return self.data or bool(self.gossip_key_file)


def kbps_to_bytes_per_s(kbps: int) -> int:
    """A cap in kbit/s, as the config and WAN links count (1 kbit = 1000 bits), in the bytes/s libtorrent takes."""
    return kbps * 1000 // 8


def load(path: Path) -> NodeConfig:
    """Read and check a node config file; PosswarmError names the file, the key and the fix."""
    raw = load_toml(path, "config", fix="pass --config with the node's TOML file")
    return from_dict(raw, source=str(path))


def from_dict(raw: dict, *, source: str = "config") -> NodeConfig:
    """Check a parsed TOML document and build the config; unknown keys are errors (typos must not pass)."""
    flat: dict[str, object] = {}
    for section, body in raw.items():
        if not isinstance(body, dict):
            raise PosswarmError(f"{source}: '{section}' must be a [section] table (see docs/configuration.md)")
        for key, value in body.items():
            name = f"{section}.{key}"
            if name not in KEYS:
                raise PosswarmError(f"{source}: unknown key '{name}' (known keys are listed in docs/configuration.md)")
            flat[name] = value
    for name in REQUIRED:
        if name not in flat:
            raise PosswarmError(f"{source}: '{name}' is missing ({KEYS[name][1]})")
    kwargs = {KEYS[k][0]: v for k, v in flat.items()}
    types = {f.name: f.type for f in fields(NodeConfig)}
    for key, value in flat.items():
        want = types[KEYS[key][0]]
        ok = {
            "str": isinstance(value, str),
            "int": isinstance(value, int) and not isinstance(value, bool),
            "float": isinstance(value, (int, float)) and not isinstance(value, bool),
            "bool": isinstance(value, bool),
            "Path": isinstance(value, str),
            "tuple[str, ...]": isinstance(value, list) and all(isinstance(v, str) for v in value),
        }[want]
        if not ok:
            kind = "list of strings" if want.startswith("tuple") else want.lower()
            raise PosswarmError(f"{source}: '{key}' must be a {kind}, got {value!r}")
    for key in ("data_dir", "root"):
        if key in kwargs:
            kwargs[key] = Path(kwargs[key])
    for key in ("wan_schedule", "slots", "install_window"):
        if key in kwargs:
            kwargs[key] = tuple(kwargs[key])
    config = NodeConfig(**kwargs)
    _check(config, source)
    return config


def _check(c: NodeConfig, source: str) -> None:
    if c.role not in ROLES:
        raise PosswarmError(f"{source}: 'node.role' is {c.role!r}; it must be 'cache' or 'device'")
    for key, value in (("node.id", c.node_id), ("node.store", c.store), ("node.class", c.device_class)):
        if not _ID.match(value):
            raise PosswarmError(f"{source}: '{key}' is {value!r}; use letters, digits, '.', '_' or '-' (max 63)")
    try:
        addr = ipaddress.IPv4Address(c.address)
    except ValueError:
        raise PosswarmError(f"{source}: 'node.address' is {c.address!r}; it must be an IPv4 address") from None
    try:
        net = ipaddress.IPv4Network(c.lan_network, strict=False)
    except ValueError:
        raise PosswarmError(f"{source}: 'node.lan_network' is {c.lan_network!r}; it must be a CIDR like 10.20.0.0/16") from None
    if addr not in net:
        raise PosswarmError(f"{source}: 'node.address' {addr} is outside 'node.lan_network' {net}; fix one of them")
    for key, port in (("node.bt_port", c.bt_port), ("node.http_port", c.http_port),
                      ("store.gossip_port", c.gossip_port), ("store.api_port", c.api_port)):
        if not 0 <= port <= 65535:
            raise PosswarmError(f"{source}: '{key}' is {port}; it must be 0..65535")
    if c.log_level not in ("debug", "info", "warning", "error"):
        raise PosswarmError(f"{source}: 'node.log_level' is {c.log_level!r}; use debug, info, warning or error")
    if c.is_cache and not c.catalog_url:
        raise PosswarmError(f"{source}: a cache needs 'central.catalog_url' (the seeder's catalog, e.g. https://central:8080)")
    if c.catalog_url and not c.catalog_url.startswith("https://"):
        raise PosswarmError(f"{source}: 'central.catalog_url' is {c.catalog_url!r}; central is reached over HTTPS only "
                            "(https://...), so nothing on the WAN can read or rewrite what it sends")
    if c.metrics_token_file and not Path(c.metrics_token_file).is_file():
        raise PosswarmError(f"{source}: 'metrics.token_file' {c.metrics_token_file} does not exist (write the operator"
                            " token there, or set '' to keep /metrics shut)")
    if c.tracker_url and not c.tracker_url.startswith("https://"):
        raise PosswarmError(f"{source}: 'central.tracker_url' is {shown_url(c.tracker_url)!r}; the tracker is reached "
                            "over HTTPS only (https://...), where it knows this node by its certificate")
    if c.tls_ca and not Path(c.tls_ca).is_file():
        raise PosswarmError(f"{source}: 'central.tls_ca' {c.tls_ca} does not exist")
    if c.web_seed_ca:
        read_certificates(Path(c.web_seed_ca), f"{source}: 'central.web_seed_ca'")
    for key, url in (("central.catalog_url", c.catalog_url), ("central.tracker_url", c.tracker_url),
                     ("store.cache_url", c.cache_url)):
        if url and not url.startswith(("http://", "https://")):
            raise PosswarmError(f"{source}: '{key}' is {url!r}; it must be an http:// or https:// URL")
    for entry in c.wan_schedule:
        wan_window.parse(entry, source=f"{source}: 'wan.schedule'")
    for entry in c.install_window:
        wan_window.parse(entry, source=f"{source}: 'install.window'", rate=False)
    _check_slots(c, source)
    try:
        ZoneInfo(c.timezone)
    except (ValueError, ZoneInfoNotFoundError):
        raise PosswarmError(f"{source}: 'store.timezone' {c.timezone!r} is not an IANA time zone (e.g. Europe/London)") from None
    for key, value in (("wan.download_limit_kbps", c.wan_download_kbps), ("wan.upload_limit_kbps", c.wan_upload_kbps)):
        if value < 0:
            raise PosswarmError(f"{source}: '{key}' must be >= 0 (0 = no cap), got {value}")
    for key, value in (("timing.catalog_poll_s", c.catalog_poll_s), ("timing.status_every_s", c.status_every_s),
                       ("timing.sku_poll_s", c.sku_poll_s),
                       ("install.health_timeout_s", c.health_timeout_s), ("timing.scrub_every_s", c.scrub_every_s),
                       ("install.privileged_timeout_s", c.privileged_timeout_s)):
        if value <= 0:
            raise PosswarmError(f"{source}: '{key}' must be > 0 seconds, got {value}")
    if c.privileged_hook:
        try:
            words = shlex.split(c.privileged_hook)
        except ValueError as exc:
            raise PosswarmError(f"{source}: 'install.privileged_hook' cannot be split into words ({exc})") from None
        if not words or not words[0].startswith("/"):
            raise PosswarmError(f"{source}: 'install.privileged_hook' {c.privileged_hook!r} must start with an"
                                " absolute path (root runs it; no PATH search)")
    if c.identity_dir and not c.is_cache and c.cache_url.startswith("http://"):
        raise PosswarmError(f"{source}: 'store.cache_url' {c.cache_url} is plain HTTP; a device with a credential reads"
                            " its cache only over https (the cache serves its catalog with its node certificate)")
    if c.store_data and not c.identity_dir:
        raise PosswarmError(f"{source}: store data needs 'node.identity_dir' (gossip is mutual TLS with the node's"
                            " certificate; enrol the node with `posswarm enroll`)")
    if not c.root.is_file():
        raise PosswarmError(f"{source}: 'central.root' {c.root} does not exist (copy central's root.json there)")
    if not c.identity_dir or not Path(c.identity_dir).is_dir():
        raise PosswarmError(f"{source}: 'node.identity_dir' {c.identity_dir!r} is not a directory (enrol the node: "
                            "`posswarm enroll --central URL --token T --node-id ID --out DIR`, then name DIR here)")
    if c.expiry_grace_s < 0:
        raise PosswarmError(f"{source}: 'central.expiry_grace_s' must be >= 0 seconds, got {c.expiry_grace_s}")


def _check_slots(c: NodeConfig, source: str) -> None:
    if not c.slots:
        return
    if c.is_cache or len(c.slots) != 2 or len(set(c.slots)) != 2 or not all(s.startswith("/") for s in c.slots):
        raise PosswarmError(f"{source}: 'install.slots' must name two different absolute paths (slot A, slot B) on a"
                            " device, e.g. ['/dev/disk/by-partlabel/pos_a', '/dev/disk/by-partlabel/pos_b']")
    if c.bootloader not in ("grub", "uboot", "command"):
        raise PosswarmError(f"{source}: 'install.bootloader' is {c.bootloader!r}; use 'grub', 'uboot' or 'command'")
    if c.bootloader == "command" and not (c.env_get_command and c.env_set_command):
        raise PosswarmError(f"{source}: install.bootloader 'command' needs 'install.env_get_command' and"
                            " 'install.env_set_command' (see docs/slots.md)")
    if c.bootloader != "command" and not c.bootloader_env.startswith("/"):
        raise PosswarmError(f"{source}: install.bootloader {c.bootloader!r} needs 'install.bootloader_env', an absolute"
                            " path (grub: the grubenv file; uboot: the fw_env.config)")
