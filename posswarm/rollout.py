"""A release's signed rollout: which ring it has reached, whether it is active, paused or revoked, and what a node does."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import msgpack
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from posswarm import install_window, signed_doc
from posswarm.errors import PosswarmError
from posswarm.keys import key_id as _key_id
from posswarm.manifest import Manifest, check_component
from posswarm.targeting import matches

# Format 2 adds ``activate`` (when a device may switch to the release: posswarm/install_window.py) and
# ``activate_stores`` (the same, for some stores: "tonight, this store"); format 1 documents are still read, as
# ``activate = "window"``.
FORMAT = 2
FORMATS = (1, 2)
ROLLOUT_NAME = "rollout.msgpack"  # beside manifest.msgpack in RELEASES/NAME/VERSION
STATES = ("active", "paused", "revoked")
ROLES = ("cache", "device")
# A rollout is a few lists of store patterns; 256 KiB bounds garbage long before msgpack builds it.
MAX_ROLLOUT_BYTES = 256 * 1024
MAX_PATTERNS = 2048
MAX_RINGS = 32
# Prefixed to what is signed so a rollout signature can never pass for a manifest's, nor the reverse.
SIGNING_CONTEXT = b"posswarm-rollout-v1\x00"

#: A ring or group name, in rollout documents and in the seeder's rollouts.toml.
RING_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
RING_NAME_RULE = "1-64 of A-Z a-z 0-9 . _ + -"

FETCH = "fetch"  # cache: fetch it over the WAN and offer it in the store
INSTALL = "install"  # device: fetch it from the LAN and install it
HOLD = "hold"  # paused: keep what you have, start nothing new
WAIT = "wait"  # device: fetch and stage it, activate it later (its activate time or install window)
ROLL_BACK = "roll back"  # revoked: a node running it goes back to its previous release
NOT_FOR_YOU = "not for you"


class RolloutError(PosswarmError):
    """A rollout document that cannot be parsed, is malformed, is not signed by central, or is older than one held."""


@dataclass(frozen=True)
class Rollout:
    """Central's current instruction for one release; only a higher ``sequence`` replaces it.

    A store is reached when it matches one of ``stores`` (the release's audience: ids, globs, named
    groups expanded) *and* one of ``reached`` (every ring's patterns up to and including ``ring``).
    """

    name: str
    version: str
    sequence: int
    state: str  # one of STATES
    ring: str
    rings: tuple[str, ...]  # central's ring order when this was signed; ``ring`` is one of them
    reached: tuple[str, ...]
    stores: tuple[str, ...] = ("*",)
    device_classes: tuple[str, ...] = ("*",)
    created: int = 0  # unix seconds
    key_id: str = "0" * 16
    signature: bytes = b""
    format: int = FORMAT
    activate: str = install_window.WINDOW  # "now", "window" or "at <UTC time>"
    activate_stores: tuple[tuple[str, str], ...] = ()  # (store pattern, activate): the first match overrides activate

    @property
    def release_id(self) -> str:
        return f"{self.name} {self.version}"

    def _fields(self) -> dict:
        # Key order is part of the canonical encoding; never reorder, only append in a new format.
        later = {"activate": self.activate, "activate_stores": [list(p) for p in self.activate_stores]}
        return self._format_1() | (later if self.format >= 2 else {})

    def activate_in(self, store: str) -> str:
        """When devices of ``store`` switch to the release: the first ``activate_stores`` match, else ``activate``."""
        return next((when for pattern, when in self.activate_stores if matches((pattern,), store)), self.activate)

    def _format_1(self) -> dict:
        return {
            "format": self.format,
            "name": self.name,
            "version": self.version,
            "sequence": self.sequence,
            "state": self.state,
            "ring": self.ring,
            "rings": list(self.rings),
            "reached": list(self.reached),
            "stores": list(self.stores),
            "device_classes": list(self.device_classes),
            "created": self.created,
            "key_id": self.key_id,
        }

    def signed_bytes(self) -> bytes:
        return SIGNING_CONTEXT + msgpack.packb(self._fields(), use_bin_type=True)

    def to_bytes(self) -> bytes:
        return msgpack.packb(self._fields() | {"signature": self.signature}, use_bin_type=True)

    @classmethod
    def from_bytes(cls, data: bytes) -> Rollout:
        """Parse a canonical rollout document; RolloutError (and nothing else) for any other input."""
        return signed_doc.parse_canonical(data, _from_fields, what="rollout", limit=MAX_ROLLOUT_BYTES,
                                          error=RolloutError)


@dataclass(frozen=True)
class Decision:
    """What a node does about one release now, and why, in words a store's engineer reads in the log."""

    action: str  # FETCH, INSTALL, WAIT, HOLD, ROLL_BACK or NOT_FOR_YOU
    reason: str


def implied_rollout(manifest: Manifest) -> Rollout:
    """The rollout of a release published without one: the manifest's targets, ring ``all``, active, sequence 0."""
    t = manifest.targets
    return Rollout(manifest.name, manifest.version, 0, "active", "all", ("all",), ("*",), t.stores,
                   t.device_classes, manifest.created, manifest.key_id)


def sign_rollout(rollout: Rollout, private_key: Ed25519PrivateKey) -> Rollout:
    """``rollout`` checked, with its key_id set to the signer's and an Ed25519 signature over signed_bytes()."""
    unsigned = replace(rollout, key_id=_key_id(private_key.public_key()), signature=b"")
    _from_fields(unsigned._fields() | {"signature": b""})  # never sign what a node would refuse to parse
    return replace(unsigned, signature=private_key.sign(unsigned.signed_bytes()))


def verify_rollout(data: bytes, public_key: Ed25519PublicKey, *, name: str | None = None,
                   version: str | None = None) -> Rollout:
    """Parse ``data`` and check central signed it (and, if given, that it is for release ``name version``)."""
    r = Rollout.from_bytes(data)
    signed_doc.check_signature(release_id=r.release_id, what="rollout", signer=r.key_id, signature=r.signature,
                               signed=r.signed_bytes(), public_key=public_key, error=RolloutError)
    if (name is not None and r.name != name) or (version is not None and r.version != version):
        raise RolloutError(f"release {name} {version}: was handed the rollout of {r.release_id} (mixed up or replayed; ignored)")
    return r


def newer(held: Rollout | None, candidate: Rollout) -> Rollout:
    """The rollout to act on once ``candidate`` arrives: it, if its sequence is higher; RolloutError if it is a replay."""
    if held is None or candidate.sequence > held.sequence:
        return candidate
    if candidate.sequence == held.sequence and candidate.to_bytes() == held.to_bytes():
        return held
    raise RolloutError(
        f"release {candidate.release_id}: rollout sequence {candidate.sequence} does not supersede sequence "
        f"{held.sequence} already held (an old or replayed document; ignored)"
    )


def decide(rollout: Rollout, *, store: str, device_class: str, role: str) -> Decision:
    """What a cache (``role='cache'``) or device does about ``rollout``'s release in ``store``.

    Revoked applies everywhere: a revoked release is bad for every store, so whoever runs it rolls back.
    A cache follows the stores only (it serves every class in its store); a device also needs its class.
    """
    if role not in ROLES:
        raise ValueError(f"role {role!r} is not one of {ROLES}")
    rid = f"release {rollout.release_id} (rollout {rollout.sequence})"
    if rollout.state == "revoked":
        return Decision(ROLL_BACK, f"{rid}: revoked by central; a node running it goes back to its previous release")
    if not matches(rollout.stores, store):
        return Decision(NOT_FOR_YOU, f"{rid}: for stores {list(rollout.stores)}, not store {store}")
    if not matches(rollout.reached, store):
        return Decision(NOT_FOR_YOU, f"{rid}: ring {rollout.ring} has not reached store {store} yet (waits for a promotion)")
    if role == "device" and not matches(rollout.device_classes, device_class):
        return Decision(NOT_FOR_YOU, f"{rid}: for device classes {list(rollout.device_classes)}, not {device_class}")
    if rollout.state == "paused":
        return Decision(HOLD, f"{rid}: paused at ring {rollout.ring}; keep what you have, start nothing new")
    if role == "cache":
        return Decision(FETCH, f"{rid}: ring {rollout.ring} reaches store {store}; fetch it for the store")
    return Decision(INSTALL, f"{rid}: ring {rollout.ring} reaches {device_class} devices of store {store}; install it")


_FIELDS = signed_doc.Fields("rollout", RolloutError)
_bad = _FIELDS.bad
_take = _FIELDS.take
_count = _FIELDS.count


def _patterns(value: list, what: str) -> tuple[str, ...]:
    if not value or len(value) > MAX_PATTERNS or not all(isinstance(s, str) and 0 < len(s) <= 256 for s in value):
        raise _bad(f"{what} is not a list of 1-{MAX_PATTERNS} strings of 1-256 chars")
    return tuple(value)


def _ring(value: str, what: str) -> str:
    if not RING_NAME.fullmatch(value):
        raise _bad(f"{what} {value[:64]!r} is not a ring name ({RING_NAME_RULE})")
    return value


def _from_fields(raw) -> Rollout:
    fmt = raw.get("format") if isinstance(raw, dict) else None
    raw = _FIELDS.top(raw, fmt if fmt in FORMATS and not isinstance(fmt, bool) else FORMAT)
    name, version = _take(raw, "name", str), _take(raw, "version", str)
    try:
        check_component(name, "release name")
        check_component(version, "release version")
    except PosswarmError as exc:
        raise RolloutError(f"rollout: {exc}") from None
    state = _take(raw, "state", str)
    if state not in STATES:
        raise _bad(f"state {state[:32]!r} is not one of {', '.join(STATES)}")
    rings = _take(raw, "rings", list)
    if not 0 < len(rings) <= MAX_RINGS or not all(isinstance(r, str) for r in rings):
        raise _bad(f"rings is not a list of 1-{MAX_RINGS} ring names")
    rings = tuple(_ring(r, "a ring") for r in rings)
    if len(set(rings)) != len(rings):
        raise _bad("rings repeats a ring")
    ring = _ring(_take(raw, "ring", str), "ring")
    if ring not in rings:
        raise _bad(f"ring {ring!r} is not one of its rings")
    key, signature = _FIELDS.signer(raw)
    activate, per_store = install_window.WINDOW, ()
    if fmt >= 2:
        activate = _activate(_take(raw, "activate", str))
        pairs = _take(raw, "activate_stores", list)
        if len(pairs) > MAX_PATTERNS or not all(isinstance(p, list) and len(p) == 2 for p in pairs):
            raise _bad(f"activate_stores is not a list of at most {MAX_PATTERNS} [store pattern, activate] pairs")
        per_store = tuple((_patterns([p[0]], "an activate_stores pattern")[0], _activate(p[1])) for p in pairs)
    return Rollout(
        name=name,
        version=version,
        sequence=_count(_take(raw, "sequence", int), "sequence"),
        state=state,
        ring=ring,
        rings=rings,
        reached=_patterns(_take(raw, "reached", list), "reached"),
        stores=_patterns(_take(raw, "stores", list), "stores"),
        device_classes=_patterns(_take(raw, "device_classes", list), "device_classes"),
        created=_count(_take(raw, "created", int), "created"),
        key_id=key,
        signature=signature,
        format=fmt,  # one of FORMATS: top() lets no other through
        activate=activate,
        activate_stores=per_store,
    )


def _activate(value) -> str:
    if not isinstance(value, str):
        raise _bad("an activate value is not a string")
    try:
        return install_window.check_activate(value)
    except PosswarmError as exc:
        raise _bad(str(exc)) from None
