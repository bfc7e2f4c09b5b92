"""The signed release manifest: canonical msgpack encoding, strict parsing, Ed25519 signing."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import msgpack
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from posswarm import signed_doc
from posswarm.errors import PosswarmError
from posswarm.keys import key_id as _key_id

# Format 2: chunks are stored compressed, so each chunk entry carries its stored size beside its content
# length. Format 1 (every chunk stored as it is) is still read: releases published before stay usable.
FORMAT = 2
FORMATS = (1, 2)
KINDS = ("image", "app", "oci")  # a file, a directory tree, an OCI image layout
MAX_MANIFEST_BYTES = 64 * 1024 * 1024
# Prefixed to what is signed so a manifest signature can never be replayed as any other signed message.
SIGNING_CONTEXT = b"posswarm-manifest-v1\x00"

# Name and version become directory names on every device: one safe path component each.
_COMPONENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")
#: Names a node gives entries beside the versions in ``installed/NAME`` (and its data dir): never a name or version.
RESERVED = frozenset({"current", "previous", "held", "activate", "chunks", "releases", "installed", "rollouts"})
_PATH_PART = re.compile(r"[^\x00-\x1f\x7f/\\]{1,255}")
_MAX_CHUNK = 256 * 1024 * 1024  # far above FastCDC's 4 MiB cap; only bounds garbage


class ManifestError(PosswarmError):
    """A manifest that cannot be parsed, is malformed, or whose signature does not verify."""


@dataclass(frozen=True)
class ChunkRef:
    """One chunk: its BLAKE3, the size of its file (on disk, in the torrent, on the wire) and of its content.

    ``size < length`` means the file is a zstd frame of the content; ``size == length``, the content itself.
    """

    digest: bytes  # 32-byte BLAKE3 of the content
    size: int  # bytes of the stored chunk file
    length: int | None = None  # bytes of content; None: the same as size (stored as it is)

    def __post_init__(self) -> None:
        if self.length is None:
            object.__setattr__(self, "length", self.size)

    @property
    def hex(self) -> str:
        return self.digest.hex()

    @property
    def compressed(self) -> bool:
        return self.size < self.length


@dataclass(frozen=True)
class PayloadFile:
    path: str  # POSIX relative path inside the payload ("image.bin" for a single file)
    mode: int
    size: int
    chunks: tuple[ChunkRef, ...]


@dataclass(frozen=True)
class Targets:
    stores: tuple[str, ...] = ("*",)
    device_classes: tuple[str, ...] = ("*",)
    ring: str = "all"


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    kind: str  # "image" (a file) or "app" (a directory tree)
    files: tuple[PayloadFile, ...]
    total_size: int
    payload_blake3: bytes  # BLAKE3 of all payload bytes, files concatenated in manifest order
    info_hash_v1: bytes  # SHA-1 of the torrent's bencoded info dict
    info_hash_v2: bytes  # SHA-256 of the same
    piece_size: int
    targets: Targets
    created: int  # unix seconds
    key_id: str
    signature: bytes = b""
    format: int = FORMAT

    @property
    def release_id(self) -> str:
        return f"{self.name} {self.version}"

    def unique_chunks(self) -> list[ChunkRef]:
        """Each chunk once, in first-seen order: the torrent's files."""
        seen: set[bytes] = set()
        out = []
        for f in self.files:
            for c in f.chunks:
                if c.digest not in seen:
                    seen.add(c.digest)
                    out.append(c)
        return out

    @property
    def stored_size(self) -> int:
        """Bytes of the torrent's files (each chunk once, as stored): what a node holding nothing fetches.

        Compare download progress and WAN bytes with this, not with ``total_size`` (the content's size).
        """
        return sum(c.size for c in self.unique_chunks())

    def _fields(self) -> dict:
        # Key order is part of the canonical encoding; never reorder, only append in a new format.
        return {
            "format": self.format,
            "name": self.name,
            "version": self.version,
            "kind": self.kind,
            "files": [[f.path, f.mode, f.size, [_chunk_entry(c, self.format) for c in f.chunks]] for f in self.files],
            "total_size": self.total_size,
            "payload_blake3": self.payload_blake3,
            "info_hash_v1": self.info_hash_v1,
            "info_hash_v2": self.info_hash_v2,
            "piece_size": self.piece_size,
            "targets": {
                "stores": list(self.targets.stores),
                "device_classes": list(self.targets.device_classes),
                "ring": self.targets.ring,
            },
            "created": self.created,
            "key_id": self.key_id,
        }

    def signed_bytes(self) -> bytes:
        """The canonical encoding of everything but the signature, as signed."""
        return SIGNING_CONTEXT + msgpack.packb(self._fields(), use_bin_type=True)

    def to_bytes(self) -> bytes:
        fields = self._fields()
        fields["signature"] = self.signature
        return msgpack.packb(fields, use_bin_type=True)

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        """Parse a canonical manifest; ManifestError (and nothing else) for any other input."""
        return signed_doc.parse_canonical(data, _from_fields, what="manifest", limit=MAX_MANIFEST_BYTES,
                                          error=ManifestError)


def _chunk_entry(c: ChunkRef, fmt: int) -> list:
    return [c.digest, c.size] if fmt == 1 else [c.digest, c.length, c.size]


_FIELDS = signed_doc.Fields("manifest", ManifestError)
_bad = _FIELDS.bad
_take = _FIELDS.take
_count = _FIELDS.count


def _digest(value, what: str, length: int) -> bytes:
    if not isinstance(value, bytes) or len(value) != length:
        raise _bad(f"{what} is not {length} bytes")
    return value


def check_component(value: str, what: str) -> str:
    """``value`` if it is a safe single directory name, else ManifestError naming ``what``."""
    if not isinstance(value, str) or not _COMPONENT.fullmatch(value):
        raise ManifestError(
            f"{what} {value!r:.140}: not a safe directory name "
            "(use 1-128 of A-Z a-z 0-9 . _ + -, starting with a letter or digit)"
        )
    if value.lower() in RESERVED:
        raise ManifestError(f"{what} {value!r}: reserved for the node's own bookkeeping; choose another")
    return value


def safe_mode(mode: int) -> int:
    """The mode a payload file gets: the publisher's, masked to 0755. Never setuid, setgid, sticky or writable
    by group or others (a till applies it as root), but a file kept private (0600) stays private."""
    return mode & 0o755


def check_payload_path(value: str) -> str:
    """``value`` if it is a relative POSIX path with no '', '.', '..' parts, else ManifestError."""
    if not isinstance(value, str) or len(value) > 4096:
        raise _bad("a payload path is not a string of at most 4096 chars")
    parts = value.split("/")
    if any(p in (".", "..") or not _PATH_PART.fullmatch(p) for p in parts):
        raise ManifestError(f"payload path {value!r}: not a safe relative path (no '..', '.', empty parts, control chars or backslashes)")
    return value


def _str_list(value, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(s, str) and 0 < len(s) <= 256 for s in value):
        raise _bad(f"{what} is not a non-empty list of short strings")
    return tuple(value)


def _chunk(c, fmt: int) -> ChunkRef:
    if fmt == 1:
        if not isinstance(c, list) or len(c) != 2:
            raise _bad("a chunk entry is not [digest, size]")
        length = size = _count(c[1], "a chunk size", minimum=1, maximum=_MAX_CHUNK)
    else:
        if not isinstance(c, list) or len(c) != 3:
            raise _bad("a chunk entry is not [digest, length, stored size]")
        length = _count(c[1], "a chunk length", minimum=1, maximum=_MAX_CHUNK)
        # Compressing never pays past the content's own size: such a chunk is stored as it is.
        size = _count(c[2], "a chunk's stored size", minimum=1, maximum=length)
    return ChunkRef(_digest(c[0], "a chunk digest", 32), size, length)


def _from_fields(raw) -> Manifest:
    # Each format is checked by top() against itself; anything else gets its "upgrade posswarm" error.
    fmt = raw.get("format") if isinstance(raw, dict) else None
    raw = _FIELDS.top(raw, fmt if fmt in FORMATS and not isinstance(fmt, bool) else FORMAT)
    name = check_component(_take(raw, "name", str), "release name")
    version = check_component(_take(raw, "version", str), "release version")
    kind = _take(raw, "kind", str)
    if kind not in KINDS:
        raise _bad(f"kind {kind[:32]!r} is not one of {', '.join(KINDS)}")
    files = []
    refs: dict[bytes, ChunkRef] = {}
    for entry in _take(raw, "files", list):
        if not isinstance(entry, list) or len(entry) != 4:
            raise _bad("a file entry is not [path, mode, size, chunks]")
        path, mode, size, chunk_list = entry
        path = check_payload_path(path)
        mode = _count(mode, "a file mode", maximum=0o7777)
        size = _count(size, "a file size")
        if not isinstance(chunk_list, list):
            raise _bad("a file's chunk list is not a list")
        chunks = [_chunk(c, fmt) for c in chunk_list]
        for c in chunks:
            # One chunk is one torrent file: two sizes for one digest cannot both be right.
            if refs.setdefault(c.digest, c) != c:
                raise _bad(f"chunk {c.hex[:16]} is listed with two different sizes")
        if sum(c.length for c in chunks) != size:
            raise _bad(f"file {path!r}: chunk lengths do not add up to its size")
        files.append(PayloadFile(path, mode, size, tuple(chunks)))
    _check_file_set(kind, files)
    total_size = _count(_take(raw, "total_size", int), "total_size")
    if total_size != sum(f.size for f in files):
        raise _bad("total_size is not the sum of the file sizes")
    targets_raw = _take(raw, "targets", dict)
    ring = _take(targets_raw, "ring", str)
    if not 0 < len(ring) <= 64:
        raise _bad("targets.ring is not a short string")
    targets = Targets(
        stores=_str_list(_take(targets_raw, "stores", list), "targets.stores"),
        device_classes=_str_list(_take(targets_raw, "device_classes", list), "targets.device_classes"),
        ring=ring,
    )
    piece_size = _count(_take(raw, "piece_size", int), "piece_size", minimum=16 * 1024, maximum=1 << 30)
    if piece_size & (piece_size - 1):
        raise _bad("piece_size is not a power of two")
    key, signature = _FIELDS.signer(raw)
    return Manifest(
        name=name,
        version=version,
        kind=kind,
        files=tuple(files),
        total_size=total_size,
        payload_blake3=_digest(_take(raw, "payload_blake3", bytes), "payload_blake3", 32),
        info_hash_v1=_digest(_take(raw, "info_hash_v1", bytes), "info_hash_v1", 20),
        info_hash_v2=_digest(_take(raw, "info_hash_v2", bytes), "info_hash_v2", 32),
        piece_size=piece_size,
        targets=targets,
        created=_count(_take(raw, "created", int), "created"),
        key_id=key,
        signature=signature,
        format=fmt,  # one of FORMATS: top() lets no other through
    )


def _check_file_set(kind: str, files: list[PayloadFile]) -> None:
    if not files:
        raise _bad("the payload has no files")
    if kind == "image" and len(files) != 1:
        raise _bad("an image release must have exactly one file")
    paths = [f.path for f in files]
    if paths != sorted(paths) or len(set(paths)) != len(paths):
        raise _bad("payload paths are not sorted and unique")
    # "a" and "a/b" cannot both be files; an installer would fail half-way through.
    names = set(paths)
    for p in paths:
        parts = p.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in names:
                raise _bad(f"payload path {p!r} lies under another file")


def sign_manifest(m: Manifest, private_key: Ed25519PrivateKey) -> Manifest:
    """``m`` with its key_id set to the signer's and an Ed25519 signature over signed_bytes()."""
    unsigned = replace(m, key_id=_key_id(private_key.public_key()), signature=b"")
    return replace(unsigned, signature=private_key.sign(unsigned.signed_bytes()))


def verify_manifest(data: bytes, public_key: Ed25519PublicKey) -> Manifest:
    """Parse ``data`` and check it is signed by ``public_key``; ManifestError otherwise."""
    m = Manifest.from_bytes(data)
    signed_doc.check_signature(release_id=m.release_id, what="manifest", signer=m.key_id, signature=m.signature,
                               signed=m.signed_bytes(), public_key=public_key, error=ManifestError)
    return m
