"""Manifest encoding, parsing limits and signatures."""

from dataclasses import replace

import blake3
import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from posswarm.errors import PosswarmError
from posswarm.keys import key_id
from posswarm.manifest import (
    ChunkRef,
    Manifest,
    ManifestError,
    PayloadFile,
    Targets,
    check_payload_path,
    sign_manifest,
    verify_manifest,
)

A, B, C = (bytes([i]) * 32 for i in (1, 2, 3))


def sample(**changes) -> Manifest:
    m = Manifest(
        name="pos-os",
        version="2026.11",
        kind="image",
        files=(PayloadFile("image.bin", 0o644, 30, (ChunkRef(A, 10), ChunkRef(B, 20))),),
        total_size=30,
        payload_blake3=b"\x03" * 32,
        info_hash_v1=b"\x04" * 20,
        info_hash_v2=b"\x05" * 32,
        piece_size=262144,
        targets=Targets(),
        created=1_800_000_000,
        key_id="0123456789abcdef",
        signature=b"\x06" * 64,
    )
    return replace(m, **changes)


def app_sample() -> Manifest:
    files = (
        PayloadFile("bin/till", 0o755, 30, (ChunkRef(A, 10), ChunkRef(B, 20))),
        PayloadFile("etc/empty.conf", 0o644, 0, ()),
        PayloadFile("etc/till.conf", 0o600, 30, (ChunkRef(B, 20), ChunkRef(A, 10))),
        PayloadFile("lib/x.so", 0o644, 5, (ChunkRef(C, 5),)),
    )
    return sample(kind="app", files=files, total_size=65, targets=Targets(("s-0042", "s-0043"), ("till",), "pilot"))


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def test_round_trip_image_and_app():
    for m in (sample(), app_sample()):
        data = m.to_bytes()
        assert Manifest.from_bytes(data) == m
        assert Manifest.from_bytes(data).to_bytes() == data


def test_encoding_is_pinned():
    # The manifest bytes are signed and compared by hash across versions of posswarm: a change here is a format change.
    compressed = (PayloadFile("image.bin", 0o644, 30, (ChunkRef(A, 7, 10), ChunkRef(B, 20))),)
    assert blake3.blake3(sample(files=compressed).to_bytes()).hexdigest() == (
        "5aebc822bdb58d2c5e08c1cc0810a70aee5a697d4c33f1b7ac5f5159ecdcd7a3"
    )
    # Format 1 (every chunk stored as it is) encodes exactly as the releases published before format 2.
    assert blake3.blake3(sample(format=1).to_bytes()).hexdigest() == (
        "8cbd529302c7e46117adda102ef9cb1606296fcd7153c6a19e6a20f7ab483371"
    )
    assert sample().signed_bytes().startswith(b"posswarm-manifest-v1\x00")
    assert b"\x06" * 64 not in sample().signed_bytes()


def test_format_1_manifests_still_read_and_format_2_carries_stored_sizes():
    old = sample(format=1)
    back = Manifest.from_bytes(old.to_bytes())
    assert back.format == 1 and back == old
    assert all(c.size == c.length and not c.compressed for c in back.unique_chunks())
    new = sample(files=(PayloadFile("image.bin", 0o644, 30, (ChunkRef(A, 7, 10), ChunkRef(B, 20))),))
    back = Manifest.from_bytes(new.to_bytes())
    assert back.format == 2 and [(c.size, c.length, c.compressed) for c in back.unique_chunks()] == [
        (7, 10, True), (20, 20, False)]


def test_a_chunk_stored_larger_than_its_content_or_listed_twice_differently_is_refused():
    grown = sample(files=(PayloadFile("image.bin", 0o644, 30, (ChunkRef(A, 11, 10), ChunkRef(B, 20))),))
    with pytest.raises(ManifestError, match="stored size is not an integer"):
        Manifest.from_bytes(grown.to_bytes())
    twice = sample(files=(PayloadFile("image.bin", 0o644, 30, (ChunkRef(A, 7, 10), ChunkRef(A, 10, 10),
                                                                ChunkRef(B, 10, 10))),))
    with pytest.raises(ManifestError, match="two different sizes"):
        Manifest.from_bytes(twice.to_bytes())


def test_an_unknown_format_says_to_upgrade():
    with pytest.raises(ManifestError, match="format 3 is not supported .*reads format 2; upgrade posswarm"):
        Manifest.from_bytes(sample(format=3).to_bytes())


def test_release_id_and_unique_chunks_in_first_seen_order():
    m = app_sample()
    assert m.release_id == "pos-os 2026.11"
    assert [c.digest for c in m.unique_chunks()] == [A, B, C]
    assert ChunkRef(A, 1).hex == "01" * 32


def test_sign_then_verify(key):
    signed = sign_manifest(app_sample(), key)
    assert signed.key_id == key_id(key.public_key())
    assert verify_manifest(signed.to_bytes(), key.public_key()) == signed


def test_every_single_byte_change_is_rejected(key):
    data = sign_manifest(app_sample(), key).to_bytes()
    for i in range(len(data)):
        for flip in (0x01, 0x80):
            tampered = data[:i] + bytes([data[i] ^ flip]) + data[i + 1 :]
            with pytest.raises(ManifestError):
                verify_manifest(tampered, key.public_key())


def test_wrong_key_is_rejected_naming_release_and_key(key):
    data = sign_manifest(sample(), key).to_bytes()
    other = Ed25519PrivateKey.generate().public_key()
    with pytest.raises(ManifestError, match=r"release pos-os 2026.11: manifest is signed by key [0-9a-f]{16}, not "
                       + key_id(other)):
        verify_manifest(data, other)


def test_same_key_id_but_forged_signature_is_rejected(key):
    forged = replace(sign_manifest(sample(), key), created=1)  # re-encoded after signing
    with pytest.raises(ManifestError, match="signature does not match key"):
        verify_manifest(forged.to_bytes(), key.public_key())


def test_non_canonical_equivalent_encoding_is_rejected():
    data = sample().to_bytes()
    # total_size 30 is a positive fixint (0x1e); the same value as uint8 is equivalent msgpack but not canonical.
    i = data.index(b"\xaatotal_size") + len(b"\xaatotal_size")
    assert data[i] == 30
    reencoded = data[:i] + b"\xcc\x1e" + data[i + 1 :]
    assert msgpack.unpackb(reencoded) == msgpack.unpackb(data)
    with pytest.raises(ManifestError, match="not canonically encoded"):
        Manifest.from_bytes(reencoded)


@pytest.mark.parametrize(
    "changes",
    [
        {"name": "../etc"},
        {"name": "a/b"},
        {"version": ".."},
        {"version": ""},
        {"kind": "tarball"},
        {"total_size": 31},
        {"piece_size": 300000},
        {"key_id": "xyz"},
        {"info_hash_v1": b"\x00" * 32},
        {"files": ()},
        {"files": (PayloadFile("image.bin", 0o644, 31, (ChunkRef(A, 10), ChunkRef(B, 20))),)},
        {"files": (PayloadFile("../image.bin", 0o644, 30, (ChunkRef(A, 10), ChunkRef(B, 20))),)},
        {"targets": Targets(stores=())},
    ],
)
def test_malformed_fields_are_rejected(changes):
    data = msgpack.packb(sample(**changes)._fields() | {"signature": b""}, use_bin_type=True)
    with pytest.raises(ManifestError):
        Manifest.from_bytes(data)


def test_app_layout_rules():
    base = app_sample()
    unsorted = replace(base, files=tuple(reversed(base.files)))
    nested = replace(base, files=(PayloadFile("a", 0o644, 0, ()), PayloadFile("a/b", 0o644, 0, ())), total_size=0)
    for m in (unsorted, nested):
        with pytest.raises(ManifestError):
            Manifest.from_bytes(m.to_bytes())


@pytest.mark.parametrize("path", ["/abs", "a//b", "a/./b", "a/../b", "..", "a\\b", "a/\x00", ""])
def test_unsafe_payload_paths(path):
    with pytest.raises(ManifestError):
        check_payload_path(path)


def test_errors_are_posswarm_errors_and_one_line():
    with pytest.raises(PosswarmError) as info:
        Manifest.from_bytes(b"\x81\xa1a")
    assert "\n" not in str(info.value)
    with pytest.raises(ManifestError, match="limit"):
        Manifest.from_bytes(b"\x00" * (64 * 1024 * 1024 + 1))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_fuzz_arbitrary_bytes_only_raise_manifest_error(data):
    try:
        Manifest.from_bytes(data)
    except ManifestError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_fuzz_mutated_manifest_only_raises_manifest_error(data):
    good = app_sample().to_bytes()
    pos = data.draw(st.integers(0, len(good) - 1))
    cut = data.draw(st.integers(0, 8))
    insert = data.draw(st.binary(max_size=8))
    mutated = good[:pos] + insert + good[pos + cut :]
    try:
        m = Manifest.from_bytes(mutated)
    except ManifestError:
        return
    assert m.to_bytes() == mutated  # anything accepted is canonical


_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.binary(max_size=40) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=15), inner, max_size=5),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(app_sample()._fields()) + ["signature", "extra"]), _VALUES)
def test_fuzz_one_field_replaced_only_raises_manifest_error(field, value):
    fields = app_sample()._fields() | {"signature": b""}
    fields[field] = value
    try:
        Manifest.from_bytes(msgpack.packb(fields, use_bin_type=True))
    except ManifestError:
        pass
