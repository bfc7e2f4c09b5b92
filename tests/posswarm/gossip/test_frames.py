"""Gossip frames: round trip of every message kind, and every kind of bad frame is dropped by reason."""

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

SECRET = b"store-042-secret-0123456789"
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


def _encode(message, *, secret=SECRET, store=STORE, counter=1):
    return frames.encode(message, key=secret, store=store, sender="till-1/boot9", counter=counter)


def _forge(fields, secret=SECRET):
    """A frame correctly tagged by someone holding the secret, with any envelope at all."""
    envelope = msgpack.packb(fields)
    return envelope + frames._tag(envelope, secret)


def _reason(data, *, secret=SECRET, store=STORE):
    with pytest.raises(FrameRejected) as caught:
        frames.decode(data, key=secret, store=store)
    return caught.value.reason


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: m.KIND)
def test_every_message_round_trips(message):
    frame = frames.decode(_encode(message, counter=99), key=SECRET, store=STORE)
    assert frame.message == message
    assert (frame.store, frame.sender, frame.counter, frame.kind) == (STORE, "till-1/boot9", 99, message.KIND)


def test_any_flipped_byte_is_rejected():
    data = _encode(MESSAGES[1])
    for i in range(len(data)):
        tampered = bytearray(data)
        tampered[i] ^= 0x40
        with pytest.raises(FrameRejected):
            frames.decode(bytes(tampered), key=SECRET, store=STORE)


def test_tampered_body_is_a_bad_tag():
    data = bytearray(_encode(SalesAck("till-1", "ab" * 16, 41)))
    data[-frames.TAG_SIZE - 1] ^= 1  # the envelope's last byte is the hwm: 41 becomes 40
    assert _reason(bytes(data)) is Reason.BAD_TAG


def test_another_secret_is_a_bad_tag():
    assert _reason(_encode(MESSAGES[0], secret=b"some-other-store-secret")) is Reason.BAD_TAG


def test_another_store_is_wrong_store():
    assert _reason(_encode(MESSAGES[0], store="S043")) is Reason.WRONG_STORE


def test_other_version_is_bad_version():
    assert _reason(_forge([2, STORE, "x", 1, "heartbeat", ["a", "device", 1]])) is Reason.BAD_VERSION


def test_oversized_is_refused_before_parsing_and_never_sent():
    assert _reason(b"\x00" * (frames.MAX_FRAME + 1)) is Reason.OVERSIZED
    huge = SkuDigest(tuple(bytes(16) for _ in range(frames.MAX_FRAME // 16)))
    with pytest.raises(PosswarmError, match="fewer items"):
        _encode(huge)


@pytest.mark.parametrize(
    "fields",
    [
        [1, STORE, "x", 1, "no.such.kind", []],
        [1, STORE, "x", -1, "heartbeat", ["a", "device", 1]],
        [1, STORE, "", 1, "heartbeat", ["a", "device", 1]],
        [1, STORE, "x", 1, "heartbeat", ["a", "device"]],
        [1, STORE, "x", 1, "sales.push", [["till-1", "zz", 1, 0, [], 0, []]]],
        [1, STORE, "x", 1, "sales.push", [SALE.to_wire()[:-1] + [[["cash", 1]]]]],  # tenders do not pay the total
        [1, STORE, "x", 1, "sales.digest", [["till-1", "ab", "many"]]],
        [1, STORE, "x", 1, "sku.digest", [b"short"]],
        [1, STORE, "x", 1, "sku.entries", [["SKU1", -5, "central", False, "", "", 0, ""]]],
        [1, STORE, "x", 1, "sku.request", [1, None]],
        [1, STORE, "x", 1, "heartbeat", {"node": "a"}],
        {"not": "a list"},
    ],
)
def test_authentic_but_malformed_frames_are_malformed(fields):
    assert _reason(_forge(fields)) is Reason.MALFORMED


@pytest.mark.parametrize("data", [b"", b"\x01" * 16])
def test_shorter_than_a_tag_is_malformed(data):
    assert _reason(data) is Reason.MALFORMED


@pytest.mark.parametrize(
    "envelope",
    [
        b"\xc1",  # not msgpack
        b"\x92\x01",  # truncated msgpack
        b"\xdd\xff\xff\xff\xff",  # an array claiming 4 billion items
        msgpack.packb([1, "S043", "x", 1, "heartbeat", ["a", "device", 1, 7946]]),  # another store, unsigned
        msgpack.packb([2, STORE, "x", 1, "heartbeat", ["a", "device", 1, 7946]]),  # another version, unsigned
    ],
)
def test_without_the_secret_nothing_is_parsed_every_frame_is_a_bad_tag(envelope):
    # The tag is checked before the envelope is unpacked: garbage, a claimed store or a claimed
    # version from someone without the secret all end the same way, unread.
    assert _reason(envelope + bytes(frames.TAG_SIZE)) is Reason.BAD_TAG


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_only_ever_raise_frame_rejected(data):
    with pytest.raises(FrameRejected):
        frames.decode(data, key=SECRET, store=STORE)


_msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=20) | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from(sorted(frames.KINDS)), body=_msgpack_values, counter=_msgpack_values)
def test_authentic_frames_with_random_bodies_decode_or_are_malformed(kind, body, counter):
    # Someone holding the secret (a buggy node) can still send any body: still no traceback.
    try:
        frame = frames.decode(_forge([1, STORE, "x", counter, kind, body]), key=SECRET, store=STORE)
    except FrameRejected as exc:
        assert exc.reason is Reason.MALFORMED
    else:
        assert frame.kind == kind


def test_short_secret_is_a_config_error():
    with pytest.raises(PosswarmError, match="at least 16 bytes"):
        _encode(MESSAGES[0], secret=b"short")
