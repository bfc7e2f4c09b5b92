"""Gossip frames: round trip of every message kind, and every kind of bad frame is dropped by reason, never a traceback."""

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from posswarm.errors import PosswarmError
from posswarm.gossip import frames
from posswarm.gossip.frames import FrameRejected, Reason
from posswarm.gossip.messages import (
    Heartbeat,
    Hello,
    SalesAck,
    SalesDigest,
    SalesPush,
    SkuDigest,
    SkuEntries,
    SkuRequest,
)
from posswarm.sales.model import Line, Sale, Tender
from posswarm.sku.entry import SkuEntry

STORE = "S042"

SALE = Sale("till-1", "ab" * 16, 7, 1_700_000_000_000, (Line("SKU1", 2, 150), Line("SKU2", 1, 99)), 399,
            (Tender("card", 399),))  # fmt: skip

MESSAGES = [
    Heartbeat("till-1", "device", 1_700_000_000_000, 7946),
    Hello("till-1", "device", 7946),
    SalesPush((SALE, SALE)),
    SalesAck("till-1", "ab" * 16, 41),
    SalesDigest({("till-1", "ab" * 16): 41, ("till-2", "cd" * 16): 0}),
    SkuDigest(tuple(bytes([i]) * 16 for i in range(8))),
    SkuEntries((SkuEntry("SKU1", 5 << 16, "central", barcode="4006381333931", name="Pen", price_cents=150),
                SkuEntry("SKU2", 6 << 16, "central", deleted=True))),  # fmt: skip
    SkuRequest((0, 17, 1023)),
]


def _encode(message, *, counter=1):
    return frames.encode(message, sender="till-1/boot9", counter=counter)


def _forge(fields):
    """A frame a (buggy or stolen) certified node could send: any envelope at all."""
    return msgpack.packb(fields)


def _reason(data):
    with pytest.raises(FrameRejected) as caught:
        frames.decode(data)
    return caught.value.reason


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: m.KIND)
def test_every_message_round_trips(message):
    frame = frames.decode(_encode(message, counter=99))
    assert frame.message == message
    assert (frame.sender, frame.counter, frame.kind) == ("till-1/boot9", 99, message.KIND)


def test_any_flipped_byte_is_rejected_or_decodes_to_something_checked():
    data = _encode(MESSAGES[3])
    for i in range(len(data)):
        tampered = bytearray(data)
        tampered[i] ^= 0x40
        try:
            frame = frames.decode(bytes(tampered))
        except FrameRejected:
            continue
        assert isinstance(frame.message, tuple(frames.KINDS.values()))


def test_other_version_is_bad_version():
    # Version 1 carried the store-key tag; a node of that version cannot even finish the TLS handshake.
    assert _reason(_forge([1, "x", 1, "heartbeat", ["a", "device", 1, 7946]])) is Reason.BAD_VERSION
    assert _reason(_forge([3, "x", 1, "heartbeat", ["a", "device", 1, 7946]])) is Reason.BAD_VERSION


def test_oversized_is_refused_before_parsing_and_never_sent():
    assert _reason(b"\x00" * (frames.MAX_FRAME + 1)) is Reason.OVERSIZED
    huge = SkuDigest(tuple(bytes(16) for _ in range(frames.MAX_FRAME // 16)))
    with pytest.raises(PosswarmError, match="fewer items"):
        _encode(huge)


@pytest.mark.parametrize(
    "fields",
    [
        [2, "x", 1, "no.such.kind", []],
        [2, "x", -1, "heartbeat", ["a", "device", 1, 1]],
        [2, "", 1, "heartbeat", ["a", "device", 1, 1]],
        [2, "x", 1, "heartbeat", ["a", "device"]],
        [2, "x", 1, "sales.push", [["till-1", "zz", 1, 0, [], 0, []]]],
        [2, "x", 1, "sales.push", [SALE.to_wire()[:-1] + [[["cash", 1]]]]],  # tenders do not pay the total
        [2, "x", 1, "sales.digest", [["till-1", "ab", "many"]]],
        [2, "x", 1, "sku.digest", [b"short"]],
        [2, "x", 1, "sku.entries", [["SKU1", -5, "central", False, "", "", 0, ""]]],
        [2, "x", 1, "sku.request", [1, None]],
        [2, "x", 1, "heartbeat", {"node": "a"}],
        [2, STORE, "x", 1, "heartbeat", ["a", "device", 1, 1]],  # the version 1 layout
        {"not": "a list"},
        b"\xc1",
    ],
)
def test_malformed_frames_are_malformed(fields):
    data = fields if isinstance(fields, bytes) else _forge(fields)
    assert _reason(data) is Reason.MALFORMED


@pytest.mark.parametrize("data", [b"", b"\xc1", b"\x92\x01", b"\xdd\xff\xff\xff\xff"])
def test_garbage_truncated_and_huge_claims_are_malformed(data):
    assert _reason(data) is Reason.MALFORMED


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_only_ever_raise_frame_rejected_or_decode(data):
    try:
        frames.decode(data)
    except FrameRejected:
        pass


_msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=20) | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from(sorted(frames.KINDS)), body=_msgpack_values, counter=_msgpack_values)
def test_frames_with_random_bodies_decode_or_are_malformed(kind, body, counter):
    # A certified node (buggy, or stolen) can still send any body: still no traceback.
    try:
        frame = frames.decode(_forge([2, "x", counter, kind, body]))
    except FrameRejected as exc:
        assert exc.reason is Reason.MALFORMED
    else:
        assert frame.kind == kind
