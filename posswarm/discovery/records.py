"""What a store node says about itself over mDNS: the Advert and its DNS-SD TXT form (pure)."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from posswarm.errors import PosswarmError

SERVICE_TYPE = "_posswarm._tcp.local."
TXT_VERSION = "1"
ROLES = frozenset({"cache", "device"})

# The node id is the DNS-SD instance name and the first label(s) of its host name, so it fits
# one DNS label (RFC 1035: 63 bytes) and has no empty label ("a..b", ".a", "a."); the same
# conservative alphabet keeps store ids and device classes safe in TXT and in logs.
_NAME = re.compile(r"(?=.{1,63}\Z)[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*", re.ASCII)
# Decimal ports only: no sign, no spaces, no "0x", no 10-digit surprises.
_PORT = re.compile(r"[0-9]{1,5}")
# RFC 6763 §6.1: each TXT string (key=value) is at most 255 bytes.
_TXT_STRING_MAX = 255
_REQUIRED_KEYS = ("v", "store", "role", "class", "bt", "http", "gossip", "node")


@dataclass(frozen=True)
class Advert:
    """One store node as its peers see it; invalid field values raise PosswarmError."""

    node_id: str  # stable id; also the mDNS instance name
    store: str  # store id, e.g. "S042"
    role: str  # "cache" | "device"
    device_class: str  # e.g. "pos", "kiosk", "backoffice", "cache"
    address: str  # IPv4 of the node on the store LAN
    bt_port: int  # libtorrent listen port
    http_port: int = 0  # the cache's LAN HTTP API port (0 for devices)
    gossip_port: int = 0  # reserved for the store gossip channel

    def __post_init__(self) -> None:
        for field, value in (("node_id", self.node_id), ("store", self.store), ("device_class", self.device_class)):
            if not isinstance(value, str) or not _NAME.fullmatch(value):
                raise PosswarmError(
                    f"mDNS advert: {field} {value!r} is not 1-63 characters of [A-Za-z0-9._-] without an empty dot-label (rename it in the node config)"
                )
        if self.role not in ROLES:
            raise PosswarmError(f"mDNS advert {self.node_id}: role {self.role!r} is not one of cache, device (fix the node config)")
        try:
            ipaddress.IPv4Address(self.address)
        except (ipaddress.AddressValueError, ValueError, TypeError):
            raise PosswarmError(
                f"mDNS advert {self.node_id}: address {self.address!r} is not an IPv4 address (set the node's LAN address)"
            ) from None
        for field, value, lowest in (("bt_port", self.bt_port, 1), ("http_port", self.http_port, 0), ("gossip_port", self.gossip_port, 0)):
            if type(value) is not int or not lowest <= value <= 65535:
                raise PosswarmError(
                    f"mDNS advert {self.node_id}: {field} {value!r} is not a port in {lowest}..65535 (fix the node config)"
                )


def instance_name(node_id: str) -> str:
    """The full DNS-SD service name a node registers under."""
    return f"{node_id}.{SERVICE_TYPE}"


def to_txt(advert: Advert) -> dict[str, str]:
    """The TXT properties a node publishes; from_service reads them back."""
    return {
        "v": TXT_VERSION,
        "store": advert.store,
        "role": advert.role,
        "class": advert.device_class,
        "bt": str(advert.bt_port),
        "http": str(advert.http_port),
        "gossip": str(advert.gossip_port),
        "node": advert.node_id,
    }


def from_service(instance_name: str, addresses: list[str], port: int, txt: dict[bytes, bytes | None]) -> Advert | None:
    """The Advert behind a resolved service, or None for anything invalid or foreign; never raises.

    ``instance_name`` may be bare (``till-07``) or full (``till-07._posswarm._tcp.local.``).
    """
    try:
        return _parse(instance_name, addresses, port, txt)
    except Exception:  # a hostile LAN is the normal case: anything unexpected is just "not ours"
        return None


def _parse(name: str, addresses: list[str], port: int, txt: dict[bytes, bytes | None]) -> Advert | None:
    suffix = "." + SERVICE_TYPE
    if name.lower().endswith(suffix):
        name = name[: -len(suffix)]
    props = _decode_txt(txt)
    if props is None or any(key not in props for key in _REQUIRED_KEYS) or props["v"] != TXT_VERSION:
        return None
    # The instance name is the node id; a mismatch means a renamed or forged record.
    if props["node"] != name:
        return None
    ports = {}
    for key in ("bt", "http", "gossip"):
        if not _PORT.fullmatch(props[key]):
            return None
        ports[key] = int(props[key])
    # The SRV port is authoritative for where to connect; TXT must agree with it.
    if type(port) is not int or ports["bt"] != port:
        return None
    address = next((a for a in addresses if isinstance(a, str) and _is_ipv4(a)), None)
    if address is None:
        return None
    try:
        return Advert(
            node_id=name,
            store=props["store"],
            role=props["role"],
            device_class=props["class"],
            address=address,
            bt_port=ports["bt"],
            http_port=ports["http"],
            gossip_port=ports["gossip"],
        )
    except PosswarmError:
        return None


def _decode_txt(txt: dict[bytes, bytes | None]) -> dict[str, str] | None:
    props: dict[str, str] = {}
    for key, value in txt.items():
        if not isinstance(key, bytes) or not (value is None or isinstance(value, bytes)):
            return None
        if len(key) + 1 + len(value or b"") > _TXT_STRING_MAX:
            return None
        if value is None:
            continue  # a boolean attribute (RFC 6763 §6.4); none of ours are
        try:
            props[key.decode("utf-8").lower()] = value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return props


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True
