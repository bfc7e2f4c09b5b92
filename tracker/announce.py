"""Announce and scrape wire format (BEP 3, 23, 48): query bytes in, bencoded bytes out."""

from __future__ import annotations

import binascii
import dataclasses
import functools
import ipaddress
import re
from collections.abc import Iterable
from urllib.parse import unquote_to_bytes

import fastbencode

from posswarm.errors import PosswarmError

ROLES = ("seeder", "cache", "device")
# BEP 21 adds "paused"; libtorrent sends it for upload-only peers, so it is a normal update here.
EVENTS = ("", "started", "completed", "stopped", "paused")
MAX_TEXT = 128  # store ids, node ids, release names: generous, but bounded
_DIGITS = re.compile(rb"[0-9]{1,19}")  # 19 digits stay below 2**63, what bencode integers hold everywhere
PASSKEY = re.compile(r"[A-Za-z0-9_.~-]{1,64}")


DENIED = "access denied (check the tracker URL in this node's config: /announce/<your passkey>, from central IT)"


class BadRequest(PosswarmError):
    """The client sent something we cannot use; the message is the BEP 3 ``failure reason``."""


class Denied(BadRequest):
    """A refusal about credentials: always the same words, so a guesser learns nothing from them."""

    def __init__(self) -> None:
        super().__init__(DENIED)


@dataclasses.dataclass(frozen=True, slots=True)  # slots: a tracker holds one per peer (memory per peer)
class Announce:
    """One parsed announce: the BEP 3 fields plus posswarm's optional store/role/progress keys."""

    info_hash: bytes
    peer_id: bytes
    ip: str
    port: int
    uploaded: int
    downloaded: int
    left: int
    event: str = ""
    compact: bool = True
    numwant: int | None = None
    store: str | None = None
    role: str | None = None
    device_class: str | None = None
    node: str | None = None
    release: str | None = None
    size: int | None = None
    wan: int | None = None
    lan: int | None = None
    installed: bool = False
    ring: str | None = None  # the release's rollout ring as the node holds it (signed central state)
    # The ``ip=`` the announce gave, when it differs from ``ip``: believed for the announcer's own store
    # only (its LAN address behind the store NAT), unless a trusted proxy sent it (tracker/access.py).
    lan_ip: str | None = None
    catalog_port: int | None = None  # a cache's store catalog port (catalog=), for tills that cannot find it
    # When the node's verified central state expires (unix s, 0 = none yet): past it the node installs nothing new.
    central_expires: int | None = None
    # Where the release stands on the node (posswarm/lifecycle's state names: downloading, staged, boot_pending,
    # installed...): a till that holds a release and waits for its store's install window is staged, not stalled.
    state: str | None = None
    # A till with boot slots: the slot it booted (a|b), the verdict on that boot (trial, confirmed, rejected,
    # fell back...) and the reason the node gave for it.
    slot: str | None = None
    boot: str | None = None
    boot_reason: str | None = None
    # Placed by a verified node certificate (tracker/node_auth.py), not by a passkey or the query's claims.
    certified: bool = False

    @property
    def node_key(self) -> str:
        """Who this is across re-announces and torrents: the posswarm node id, else the peer id."""
        return self.node if self.node is not None else "peer-" + self.peer_id.hex()


def split_query(query: bytes, *, max_query: int = 4096) -> dict[str, list[bytes]]:
    """Raw query string -> {key: [values]} with values as bytes (scrape asks for several info_hash values).

    Values are percent-decoded straight to bytes (``unquote_to_bytes``), never through UTF-8,
    because info_hash and peer_id are 20 arbitrary bytes. '+' means a space, as in any form
    query: Python's ``urlencode`` writes spaces so, and BitTorrent clients send a 0x2B byte as %2B.
    """
    _check_size(query, max_query)
    fields: dict[str, list[bytes]] = {}
    for part in query.split(b"&"):
        if not part:
            continue
        key, _, value = part.partition(b"=")
        fields.setdefault(_unquote(key).decode("latin-1"), []).append(_unquote(value))
    return fields


def first_values(query: bytes, *, max_query: int = 4096) -> dict[str, bytes]:
    """Raw query string -> {key: its first value, still percent-encoded}; ``_raw`` decodes the ones read.

    An announce has a dozen keys and is parsed thousands of times a second: one dict built at C
    speed, and no decoding of values nobody reads, cost far less than ``split_query``.
    """
    _check_size(query, max_query)
    pairs = [part.partition(b"=") for part in query.split(b"&")]
    fields = {key.decode("latin-1"): value for key, _, value in reversed(pairs)}  # reversed: the first one wins
    keys = "".join(fields)
    if "%" in keys or "+" in keys:  # an escaped key: rare, take the general path
        return {key: values[0] for key, values in split_query(query, max_query=max_query).items()}
    return fields


def _check_size(query: bytes, max_query: int) -> None:
    if len(query) > max_query:
        raise BadRequest(f"query string is {len(query)} bytes, the limit is {max_query}")


def _unquote(raw: bytes) -> bytes:
    # Most keys and numbers carry no escapes; skipping unquote for them halves the parse time.
    if b"%" not in raw and b"+" not in raw:
        return raw
    raw = raw.replace(b"+", b" ")
    if b"=" in raw or b" " in raw or b"\r" in raw or b"\n" in raw or b"\t" in raw or b"%" in raw[-2:]:
        return unquote_to_bytes(raw)
    # A percent-escaped info_hash is quoted-printable with '%' for '=': binascii decodes it in C,
    # 2-3x faster than unquote_to_bytes. The cases QP reads otherwise (a literal '=', whitespace,
    # a soft line break at the end) went the slow way above; a bad escape leaves an '=' behind.
    decoded = binascii.a2b_qp(raw.replace(b"%", b"="))
    return decoded if b"=" not in decoded else unquote_to_bytes(raw)


def parse_announce(query: bytes, remote_ip: str | None, *, max_query: int = 4096, max_numwant: int = 200) -> Announce:
    """Query string of ``GET /announce`` and the TCP peer's address -> Announce, or BadRequest."""
    f = first_values(query, max_query=max_query)
    info_hash, peer_id = _hash(f, "info_hash"), _hash(f, "peer_id")
    port = _int(f, "port")
    if not 1 <= port <= 65535:
        raise BadRequest(f"port {port} is outside 1-65535")
    event = _text(f, "event", required=False, limit=16) or ""
    if event not in EVENTS:
        raise BadRequest(f"unknown event {event!r} (expected started, completed, stopped or nothing)")
    compact = _text(f, "compact", required=False, limit=16)
    if compact not in (None, "0", "1"):
        raise BadRequest(f"compact={compact!r}: expected 0 or 1")
    numwant = _int(f, "numwant", required=False)
    ip_text = _text(f, "ip", required=False, limit=45)
    # The socket's address is who sent it; ``ip=`` is only a claim, judged by Access.admit.
    ip = _address(remote_ip if remote_ip is not None else ip_text)
    lan_ip = _address(ip_text) if ip_text is not None and remote_ip is not None else None
    if lan_ip is not None and not _reachable(lan_ip):
        lan_ip = None  # ip=0.0.0.0 (a seeder listening on every address) or multicast: nobody to hand out
    return Announce(
        info_hash=info_hash,
        peer_id=peer_id,
        ip=ip,
        port=port,
        uploaded=_int(f, "uploaded"),
        downloaded=_int(f, "downloaded"),
        left=_int(f, "left"),
        event=event,
        compact=compact != "0",
        numwant=None if numwant is None else min(numwant, max_numwant),
        lan_ip=None if lan_ip == ip else lan_ip,
        # A standard client sends none of posswarm's keys: skip their ten look-ups.
        **(posswarm_keys(f) if not _POSSWARM_KEYS.isdisjoint(f) else {}),
    )


_POSSWARM_KEYS = frozenset({"role", "store", "release", "installed", "class", "node", "size", "wan", "lan", "ring",
                            "state", "slot", "boot"})
# The words a node may use for a release's state and for a boot (posswarm/lifecycle/states.py, posswarm/slots/state.py):
# anything else is a client that is not posswarm, or garbage; either way it is refused, not stored.
RELEASE_STATES = frozenset({"listed", "refused", "downloading", "verifying", "staged", "installing", "installed",
                            "boot_pending", "seeding", "previous", "superseded", "rolled_back", "revoked", "failed"})
BOOT_VERDICTS = frozenset({"trial", "confirmed", "unconfirmed", "rejected", "fell back"})
SLOTS = frozenset({"a", "b"})
MAX_BOOT_REASON = 200


def posswarm_keys(f: dict[str, bytes]) -> dict:
    """The optional posswarm keys of a query's ``first_values`` (HTTP query or BEP 41 URL data) as Announce fields."""
    role = _text(f, "role", required=False)
    if role is not None and role not in ROLES:
        raise BadRequest(f"unknown role {role!r} (expected seeder, cache or device)")
    store = _text(f, "store", required=False)
    if role in ("cache", "device") and store is None:
        raise BadRequest(f"role={role} needs store=<store id> so it is handed its own store's peers")
    release = _text(f, "release", required=False)
    if release is not None and not re.fullmatch(r"[^@]+@[^@]+", release):
        raise BadRequest(f"release {release!r} is not NAME@VERSION")
    catalog_port = _int(f, "catalog", required=False)
    if catalog_port is not None and not 1 <= catalog_port <= 65535:
        raise BadRequest(f"catalog={catalog_port}: not a port (1..65535)")
    if catalog_port is not None and role != "cache":
        raise BadRequest("catalog= is a store cache's catalog port: only role=cache sends it")
    installed = _text(f, "installed", required=False, limit=16)
    if installed not in (None, "0", "1"):
        raise BadRequest(f"installed={installed!r}: expected 0 or 1")
    state = _word(f, "state", RELEASE_STATES)
    slot, boot = _word(f, "slot", SLOTS), _word(f, "boot", BOOT_VERDICTS)
    if (slot is None) != (boot is None):
        raise BadRequest("slot= and boot= come together: the slot a till booted and the verdict on that boot")
    return dict(
        store=store,
        role=role,
        device_class=_text(f, "class", required=False),
        node=_text(f, "node", required=False),
        release=release,
        size=_int(f, "size", required=False),
        wan=_int(f, "wan", required=False),
        lan=_int(f, "lan", required=False),
        installed=installed == "1",
        ring=_text(f, "ring", required=False, limit=64),
        catalog_port=catalog_port,
        central_expires=_int(f, "central_expires", required=False),
        state=state,
        slot=slot,
        boot=boot,
        boot_reason=_text(f, "boot_reason", required=False, limit=MAX_BOOT_REASON) if slot is not None else None,
    )


def _word(f: dict[str, bytes], key: str, words: frozenset[str]) -> str | None:
    """An optional key that must be one of ``words``; refused by name otherwise."""
    value = _text(f, key, required=False, limit=32)
    if value is not None and value not in words:
        raise BadRequest(f"{key}={value!r}: not one this tracker knows ({', '.join(sorted(words))}; upgrade the tracker "
                         "before the nodes)")
    return value


def passkey_of(path: str) -> str | None:
    """``/announce`` or ``/scrape`` -> None, ``/announce/<passkey>`` -> the passkey; BadRequest otherwise."""
    parts = [p for p in path.split("/") if p]
    if not parts:
        return None  # BEP 41 lets a UDP client send no path at all
    if parts[0] not in ("announce", "scrape", "caches") or len(parts) > 2:
        raise BadRequest(f"unknown path {path[:80]!r} (announce to /announce or /announce/<passkey>)")
    if len(parts) == 1:
        return None
    if not PASSKEY.fullmatch(parts[1]):
        raise Denied()
    return parts[1]


def parse_scrape(query: bytes, *, max_query: int = 4096) -> list[bytes]:
    """Query string of ``GET /scrape`` -> the info-hashes asked for (empty list = all, BEP 48)."""
    hashes = split_query(query, max_query=max_query).get("info_hash", [])
    for value in hashes:
        if len(value) != 20:
            raise BadRequest(f"info_hash is {len(value)} bytes, expected 20 (percent-encode the raw SHA-1)")
    return list(dict.fromkeys(hashes))


def encode_caches(caches: list[tuple[str, int]], interval: int) -> bytes:
    """The answer on ``/caches``: the asking store's caches as BEP 3 style peer dicts (their catalog port)."""
    return fastbencode.bencode({b"interval": interval, b"caches": [
        {b"ip": ip.encode(), b"port": port} for ip, port in caches]})


def encode_failure(reason: str) -> bytes:
    """The BEP 3 error answer: a dict with only ``failure reason`` (sent with HTTP 200)."""
    return fastbencode.bencode({b"failure reason": reason.encode("utf-8", "replace")})


def encode_announce(
    *,
    interval: int,
    min_interval: int,
    complete: int,
    incomplete: int,
    peers: Iterable[tuple[str, int, bytes]] = (),
    compact: bool = True,
    packed: tuple[bytes, bytes] | None = None,
) -> bytes:
    """Announce answer; ``peers`` are (ip, port, peer_id). Compact = 6-byte IPv4 (BEP 23) + 18-byte IPv6 (BEP 7).

    ``packed`` = the compact entries already encoded (IPv4, IPv6); it replaces ``peers`` when compact.
    """
    answer: dict[bytes, object] = {
        b"interval": interval,
        b"min interval": min_interval,
        b"complete": complete,
        b"incomplete": incomplete,
    }
    if compact:
        if packed is None:
            v4, v6 = bytearray(), bytearray()
            for ip, port, _peer_id in peers:
                entry = compact_peer(ip, port)
                (v4 if len(entry) == 6 else v6).extend(entry)
            packed = bytes(v4), bytes(v6)
        answer[b"peers"] = packed[0]
        if packed[1]:
            answer[b"peers6"] = packed[1]
    else:
        answer[b"peers"] = [{b"peer id": peer_id, b"ip": ip.encode(), b"port": port} for ip, port, peer_id in peers]
    return fastbencode.bencode(answer)


@functools.lru_cache(maxsize=4096)  # ~200 bytes an entry: bounded well below the memory of the swarms
def compact_peer(ip: str, port: int) -> bytes:
    """6-byte IPv4 (BEP 23) or 18-byte IPv6 (BEP 7) peer entry; cached, as the same peers are handed out all day."""
    return packed_ip(ip) + port.to_bytes(2, "big")


@functools.lru_cache(maxsize=16384)  # ipaddress takes ~5 us an address: store LANs reuse the same few thousand
def packed_ip(ip: str) -> bytes:
    return (ipaddress.IPv6Address(ip) if ":" in ip else ipaddress.IPv4Address(ip)).packed


def encode_scrape(files: dict[bytes, tuple[int, int, int]]) -> bytes:
    """Scrape answer: {info_hash: (complete, incomplete, downloaded)} -> bencoded ``files`` dict."""
    return fastbencode.bencode(
        {
            b"files": {
                h: {b"complete": c, b"incomplete": i, b"downloaded": d} for h, (c, i, d) in files.items()
            }
        }
    )


def _hash(f: dict[str, bytes], key: str) -> bytes:
    value = _raw(f, key, required=True)
    if len(value) != 20:
        raise BadRequest(f"{key} is {len(value)} bytes, expected 20 (percent-encode the raw bytes)")
    return value


def _int(f: dict[str, bytes], key: str, *, required: bool = True) -> int | None:
    value = _raw(f, key, required=required)
    if value is None:
        return None
    if not _DIGITS.fullmatch(value):
        raise BadRequest(f"{key}={value[:20]!r} is not a whole number")
    return int(value)


def _text(f: dict[str, bytes], key: str, *, required: bool = True, limit: int = MAX_TEXT) -> str | None:
    value = _raw(f, key, required=required)
    if value is None or (value == b"" and not required):
        return None
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(f"{key} is not UTF-8 text") from None
    if len(text) > limit or not text.isprintable():
        raise BadRequest(f"{key} must be printable text of at most {limit} characters")
    return text


def _raw(f: dict[str, bytes], key: str, *, required: bool) -> bytes | None:
    value = f.get(key)
    if value is None:
        if required:
            raise BadRequest(f"missing {key}")
        return None
    return _unquote(value)


def _address(text: str | None) -> str:
    if text is None:
        raise BadRequest("no peer address: send ip=A.B.C.D")
    return _canonical_address(text)


@functools.lru_cache(maxsize=65536)
def _reachable(address: str) -> bool:
    parsed = ipaddress.ip_address(address)
    return not (parsed.is_unspecified or parsed.is_multicast)


@functools.lru_cache(maxsize=65536)  # the same few thousand store addresses announce all day
def _canonical_address(text: str) -> str:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise BadRequest(f"ip {text[:45]!r} is not an IPv4 or IPv6 address") from None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # dual-stack sockets report v4 clients as ::ffff:a.b.c.d
    return str(address)
