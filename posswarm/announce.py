"""Tracker announces from a posswarm process: the query it sends and the reply it reads (pure; no I/O).

Beside BEP 3's keys a posswarm announce carries ``store``, ``role``, ``class``, ``node``, ``release``
(NAME@VERSION), ``size``, ``wan``/``lan`` (payload bytes received from outside / inside the store),
``installed``, ``ring`` (the release's rollout ring, when it has one), ``state`` (the release's lifecycle
state: a till staged for its install window is waiting, not stalled) and, from a till with boot slots,
``slot``/``boot``/``boot_reason`` (the slot it booted and the verdict on that boot), so the tracker can show
per-store rollout progress, activation and the WAN-once ratio.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import quote_from_bytes, urlencode

import blake3
import fastbencode

from posswarm.errors import PosswarmError

MAX_REPLY_BYTES = 1 << 20
MAX_BOOT_REASON = 200  # the tracker refuses a longer boot_reason (tracker/announce.py)


@dataclass(frozen=True)
class NodeIdentity:
    """Who announces: the same for every release the process carries."""

    node_id: str
    store: str
    role: str  # seeder | cache | device
    device_class: str
    ip: str
    port: int
    catalog_port: int = 0  # a cache's store catalog (HTTP) port, so the tracker can point tills at it

    @property
    def peer_id(self) -> bytes:
        return b"-PS0100-" + blake3.blake3(self.node_id.encode()).hexdigest(6).encode()


@dataclass(frozen=True)
class ReleaseReport:
    """Where one release stands on this node, as the tracker should hear it."""

    name: str
    version: str
    info_hash_v1: bytes
    size: int
    left: int
    wan_bytes: int
    lan_bytes: int
    uploaded: int
    installed: bool
    ring: str = ""  # the rollout ring the release is at, when central signed one
    central_expires: int = 0  # when the node's verified central state expires (unix s; 0 = none verified yet)
    state: str = ""  # the release's lifecycle state here (staged = held back by the store's install window)
    boot: tuple[str, str, str] | None = None  # a till with boot slots: (slot it booted, verdict, reason)


@dataclass(frozen=True)
class AnnounceReply:
    interval: float
    peers: tuple[tuple[str, int], ...]


def announce_url(tracker_url: str, who: NodeIdentity, report: ReleaseReport, event: str = "", numwant: int = 50) -> str:
    params = {
        "peer_id": who.peer_id,
        "port": who.port,
        "uploaded": report.uploaded,
        "downloaded": report.wan_bytes + report.lan_bytes,
        "left": report.left,
        "compact": 1,
        "numwant": numwant,
        "ip": who.ip,
        "store": who.store,
        "role": who.role,
        "class": who.device_class,
        "node": who.node_id,
        "release": f"{report.name}@{report.version}",
        "size": report.size,
        "wan": report.wan_bytes,
        "lan": report.lan_bytes,
        "installed": int(report.installed),
    }
    if report.ring:
        params["ring"] = report.ring
    if report.state:
        params["state"] = report.state
    if report.boot is not None:
        params["slot"], params["boot"] = report.boot[0], report.boot[1]
        if report.boot[2]:
            params["boot_reason"] = report.boot[2][:MAX_BOOT_REASON]
    if who.catalog_port:
        params["catalog"] = who.catalog_port
    if who.role in ("cache", "device"):  # past it (and the grace) the node installs nothing new: stats show it
        params["central_expires"] = report.central_expires
    if event:
        params["event"] = event
    sep = "&" if "?" in tracker_url else "?"
    return f"{tracker_url}{sep}info_hash={quote_from_bytes(report.info_hash_v1)}&{urlencode(params)}"


def caches_url(tracker_url: str, who: NodeIdentity) -> str:
    """Where the tracker answers "which caches has my store": ``/caches[/<passkey>]`` beside ``/announce``."""
    base, sep, passkey = tracker_url.partition("/announce")
    return f"{base}/caches{passkey}?{urlencode({'store': who.store, 'node': who.node_id})}" if sep else ""


def parse_caches(body: bytes, *, tracker_url: str) -> tuple[tuple[str, int], ...]:
    """The (address, catalog port) list of a ``/caches`` answer; a PosswarmError naming the tracker otherwise."""
    doc = _reply_dict(body, tracker_url=tracker_url, what="caches request")
    caches = doc.get(b"caches", [])
    return _peers(caches if isinstance(caches, list) else [])[:16]


def shown_url(tracker_url: str) -> str:
    """The tracker URL as a log line or status may show it: the passkey in ``/announce/<passkey>`` is a secret."""
    base, sep, _ = tracker_url.partition("/announce/")
    return f"{base}/announce/<passkey>" if sep else tracker_url


def parse_reply(body: bytes, *, tracker_url: str) -> AnnounceReply:
    """Read a bencoded reply; a ``failure reason`` or garbage becomes a PosswarmError naming the tracker."""
    doc = _reply_dict(body, tracker_url=tracker_url, what="announce")
    interval = doc.get(b"interval", 30)
    if not isinstance(interval, int) or interval <= 0:
        interval = 30
    return AnnounceReply(float(interval), _peers(doc.get(b"peers", b"")) + _peers6(doc.get(b"peers6", b"")))


def _reply_dict(body: bytes, *, tracker_url: str, what: str) -> dict:
    if len(body) > MAX_REPLY_BYTES:
        raise PosswarmError(f"tracker {tracker_url}: reply of {len(body)} bytes is too large; ignored")
    try:
        doc = fastbencode.bdecode(body)
    except Exception:  # the decoder raises several types on garbage; all mean the same here
        raise PosswarmError(f"tracker {tracker_url}: reply is not bencoded; is that URL a BitTorrent tracker?") from None
    if not isinstance(doc, dict):
        raise PosswarmError(f"tracker {tracker_url}: reply is not a dictionary")
    if b"failure reason" in doc:
        reason = doc[b"failure reason"]
        reason = reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)
        raise PosswarmError(f"tracker {tracker_url}: refused the {what}: {reason[:200]}")
    return doc


def _peers(raw: object) -> tuple[tuple[str, int], ...]:
    if isinstance(raw, bytes):
        return tuple(
            (str(ipaddress.IPv4Address(raw[i : i + 4])), int.from_bytes(raw[i + 4 : i + 6], "big"))
            for i in range(0, len(raw) - len(raw) % 6, 6)
        )
    if isinstance(raw, list):  # BEP 3's non-compact form
        found = []
        for item in raw:
            if isinstance(item, dict) and isinstance(item.get(b"ip"), bytes) and isinstance(item.get(b"port"), int):
                try:
                    found.append((str(ipaddress.ip_address(item[b"ip"].decode())), item[b"port"]))
                except (ValueError, UnicodeDecodeError):
                    continue
        return tuple(found)
    return ()


def _peers6(raw: object) -> tuple[tuple[str, int], ...]:
    if not isinstance(raw, bytes):
        return ()
    return tuple(
        (str(ipaddress.IPv6Address(raw[i : i + 16])), int.from_bytes(raw[i + 16 : i + 18], "big"))
        for i in range(0, len(raw) - len(raw) % 18, 18)
    )
