"""Gossip wire codec: a msgpack envelope, size-checked before it is parsed; the TLS connection it travels on
says who sent it."""

from __future__ import annotations

import enum
from dataclasses import dataclass

import msgpack

from posswarm.errors import PosswarmError
from posswarm.gossip.messages import KINDS, BadBody, Message

# 2: the store-key tag of version 1 is gone; frames travel only inside mutual TLS between certified nodes.
VERSION = 2
# A push of ~500 sales packs to ~144 KB (notes/gossip-mdns.md §4); anything larger is refused
# before any parsing, so a store peer cannot make us allocate much.
MAX_FRAME = 256 * 1024


class Reason(enum.StrEnum):
    """Why a frame was dropped; drivers count drops per reason."""

    OVERSIZED = "oversized"
    MALFORMED = "malformed"
    BAD_VERSION = "bad_version"


class FrameRejected(PosswarmError):
    """A received frame we drop; ``reason`` is a :class:`Reason`."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"gossip frame rejected ({reason}): {detail}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Frame:
    """A decoded frame. ``(sender, counter)`` feeds the replay window; ``sender`` names one run of the
    sender's counter, never who it is (that is the connection's certificate)."""

    version: int
    sender: str
    counter: int
    message: Message

    @property
    def kind(self) -> str:
        return self.message.KIND


def encode(message: Message, *, sender: str, counter: int) -> bytes:
    """Pack ``message``; ``counter`` never repeats per ``sender`` (a boot id)."""
    if type(message) not in KINDS.values():
        raise TypeError(f"gossip: cannot send {type(message).__name__}, not a gossip message")
    envelope = msgpack.packb([VERSION, sender, counter, message.KIND, message.to_body()])
    if len(envelope) > MAX_FRAME:
        raise PosswarmError(
            f"gossip {message.KIND}: frame of {len(envelope)} bytes exceeds {MAX_FRAME}; send fewer items per message"
        )
    return envelope


def decode(data: bytes) -> Frame:
    """Check and unpack a received frame; any fault raises :class:`FrameRejected`, nothing else.

    Only a peer whose certificate of our store passed the TLS handshake gets here, and the size is
    checked before msgpack runs, so what it may make us allocate is bounded.
    """
    if len(data) > MAX_FRAME:
        raise FrameRejected(Reason.OVERSIZED, f"{len(data)} bytes, limit {MAX_FRAME}")
    try:
        fields = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several types on garbage; all mean the same here
        raise FrameRejected(Reason.MALFORMED, f"not msgpack ({type(exc).__name__})") from None
    if not isinstance(fields, list) or len(fields) != 5:
        raise FrameRejected(Reason.MALFORMED, "envelope is not a 5-item list")
    version, sender, counter, kind, body = fields
    if version != VERSION or type(version) is not int:
        raise FrameRejected(Reason.BAD_VERSION, f"version {version!r:.20}, we speak {VERSION}")
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
    return Frame(version, sender, counter, message)
