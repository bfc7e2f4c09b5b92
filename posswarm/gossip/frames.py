"""Gossip wire codec: a msgpack envelope plus a 16-byte keyed-BLAKE3 tag, checked before use."""

from __future__ import annotations

import enum
import functools
import hmac
from dataclasses import dataclass

import blake3
import msgpack

from posswarm.errors import PosswarmError
from posswarm.gossip.messages import KINDS, BadBody, Message

VERSION = 1
TAG_SIZE = 16
# A push of ~500 sales packs to ~144 KB (notes/gossip-mdns.md §4); anything larger is refused
# before any parsing, so a hostile LAN peer cannot make us allocate much.
MAX_FRAME = 256 * 1024
KEY_CONTEXT = "posswarm gossip v1"


class Reason(enum.StrEnum):
    """Why a frame was dropped; drivers count drops per reason."""

    OVERSIZED = "oversized"
    MALFORMED = "malformed"
    BAD_TAG = "bad_tag"
    WRONG_STORE = "wrong_store"
    BAD_VERSION = "bad_version"


class FrameRejected(PosswarmError):
    """A received frame we drop; ``reason`` is a :class:`Reason`."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"gossip frame rejected ({reason}): {detail}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Frame:
    """A decoded, authenticated frame. ``(sender, counter)`` feeds the replay window."""

    version: int
    store: str
    sender: str
    counter: int
    message: Message

    @property
    def kind(self) -> str:
        return self.message.KIND


@functools.lru_cache(maxsize=64)
def frame_key(store_secret: bytes) -> bytes:
    """The 32-byte MAC key for a store, derived from its configured secret.

    We derive rather than key BLAKE3 with the secret directly: a secret of any length works,
    and the same secret reused elsewhere (another protocol, a future v2) yields unrelated keys.
    """
    if not isinstance(store_secret, bytes) or len(store_secret) < 16:
        raise PosswarmError("gossip: the store secret must be at least 16 bytes; set gossip.secret in the config")
    return blake3.blake3(store_secret, derive_key_context=KEY_CONTEXT).digest()


def _tag(envelope: bytes, store_secret: bytes) -> bytes:
    return blake3.blake3(envelope, key=frame_key(store_secret)).digest(TAG_SIZE)


def encode(message: Message, *, key: bytes, store: str, sender: str, counter: int) -> bytes:
    """Pack ``message`` for ``store``, tagged with the store secret ``key``; ``counter`` never repeats per sender."""
    if type(message) not in KINDS.values():
        raise TypeError(f"gossip: cannot send {type(message).__name__}, not a gossip message")
    envelope = msgpack.packb([VERSION, store, sender, counter, message.KIND, message.to_body()])
    if len(envelope) + TAG_SIZE > MAX_FRAME:
        raise PosswarmError(
            f"gossip {message.KIND}: frame of {len(envelope)} bytes exceeds {MAX_FRAME}; send fewer items per message"
        )
    return envelope + _tag(envelope, key)


def decode(data: bytes, *, key: bytes, store: str) -> Frame:
    """Check and unpack a received frame; any fault raises :class:`FrameRejected`, nothing else.

    The tag is checked first, over the raw envelope bytes: nothing a peer without the store
    secret sends is ever parsed (no msgpack decoder run on hostile input, no allocation it
    chooses). Only an authenticated envelope is unpacked and its fields checked.
    """
    if len(data) > MAX_FRAME:
        raise FrameRejected(Reason.OVERSIZED, f"{len(data)} bytes, limit {MAX_FRAME}")
    if len(data) <= TAG_SIZE:
        raise FrameRejected(Reason.MALFORMED, f"{len(data)} bytes is shorter than a tag")
    envelope, tag = bytes(data[:-TAG_SIZE]), bytes(data[-TAG_SIZE:])
    if not hmac.compare_digest(_tag(envelope, key), tag):
        raise FrameRejected(
            Reason.BAD_TAG, "tag does not match the store secret (tampered, another store, or another secret)"
        )
    try:
        fields = msgpack.unpackb(envelope, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several types on garbage; all mean the same here
        raise FrameRejected(Reason.MALFORMED, f"not msgpack ({type(exc).__name__})") from None
    if not isinstance(fields, list) or len(fields) != 6:
        raise FrameRejected(Reason.MALFORMED, "envelope is not a 6-item list")
    version, frame_store, sender, counter, kind, body = fields
    if version != VERSION or type(version) is not int:
        raise FrameRejected(Reason.BAD_VERSION, f"version {version!r}, we speak {VERSION}")
    if frame_store != store:  # only a store sharing our secret gets here: a copied key file
        raise FrameRejected(Reason.WRONG_STORE, f"for store {frame_store!r:.70}, we are {store!r}")
    if not isinstance(sender, str) or not 0 < len(sender) <= 128:
        raise FrameRejected(Reason.MALFORMED, "sender must be 1-128 characters")
    if type(counter) is not int or counter < 0:
        raise FrameRejected(Reason.MALFORMED, "counter must be a non-negative integer")
    message_type = KINDS.get(kind) if isinstance(kind, str) else None
    if message_type is None:
        raise FrameRejected(Reason.MALFORMED, f"unknown kind {kind!r:.40}")
    try:
        message = message_type.from_body(body)
    except (BadBody, PosswarmError, TypeError, ValueError) as exc:
        raise FrameRejected(Reason.MALFORMED, f"{kind} body: {exc}") from None
    return Frame(version, frame_store, sender, counter, message)
