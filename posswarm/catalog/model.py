"""Catalog documents: the JSON a seeder or a store cache serves at ``/catalog`` (pure; no I/O)."""

from __future__ import annotations

from dataclasses import dataclass

from posswarm.errors import PosswarmError
from posswarm.manifest import Manifest, Targets, check_component
from posswarm.release import MANIFEST_NAME, TORRENT_NAME

MAX_RELEASES = 10_000
# 10,000 entries of well under 1 KiB each; the body is refused past this before it is parsed.
MAX_CATALOG_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class Digest:
    """Length and SHA-256 (hex) of a document, as central's signed TUF targets list it."""

    length: int
    sha256: str


@dataclass(frozen=True)
class CatalogEntry:
    """One release as listed in a catalog; the signed manifest it points to is the authority."""

    name: str
    version: str
    kind: str
    size: int
    targets: Targets
    info_hash_v1: str  # hex
    rollout_sequence: int = 0  # of the signed rollout.msgpack; 0 = none, the manifest's targets apply
    # From central's signed targets only (posswarm/trust/state.py); an entry parsed from the unsigned
    # JSON has None here, and every document fetched for it is refused.
    manifest: Digest | None = None
    rollout: Digest | None = None

    @property
    def release_id(self) -> str:
        return f"{self.name} {self.version}"

    @property
    def path(self) -> str:
        return f"/releases/{self.name}/{self.version}"

    @classmethod
    def of(cls, manifest: Manifest, rollout_sequence: int = 0) -> CatalogEntry:
        return cls(manifest.name, manifest.version, manifest.kind, manifest.total_size, manifest.targets,
                   manifest.info_hash_v1.hex(), rollout_sequence)


@dataclass(frozen=True)
class Catalog:
    """Releases on offer, the BitTorrent endpoints (``ip:port``) that seed them, and web seed bases.

    A web seed base ``http://host/prefix`` serves ``/releases/NAME/VERSION/chunks/<h[:2]>/<h>`` with HTTP
    Range (the seeder's own HTTP does; so can a CDN or object store holding a copy of RELEASES).
    """

    releases: tuple[CatalogEntry, ...]
    seeds: tuple[str, ...] = ()
    web_seeds: tuple[str, ...] = ()

    def web_seeds_of(self, entry: CatalogEntry) -> list[str]:
        """BEP 19 URLs for one release: ending in '/', so libtorrent appends the torrent's file paths."""
        return [f"{base.rstrip('/')}{entry.path}/" for base in self.web_seeds]

    def to_json(self) -> dict:
        return {
            "format": 1,
            "seeds": list(self.seeds),
            "web_seeds": list(self.web_seeds),
            "releases": [
                {
                    "name": e.name,
                    "version": e.version,
                    "kind": e.kind,
                    "size": e.size,
                    "info_hash_v1": e.info_hash_v1,
                    "targets": {
                        "stores": list(e.targets.stores),
                        "device_classes": list(e.targets.device_classes),
                        "ring": e.targets.ring,
                    },
                    "manifest": f"{e.path}/{MANIFEST_NAME}",
                    "torrent": f"{e.path}/{TORRENT_NAME}",
                    "rollout_sequence": e.rollout_sequence,
                }
                for e in self.releases
            ],
        }

    @classmethod
    def from_json(cls, doc: object, *, source: str) -> Catalog:
        """Parse a catalog from a peer; anything malformed is a PosswarmError naming ``source``."""
        try:
            if not isinstance(doc, dict) or doc.get("format") != 1:
                raise ValueError("not a posswarm catalog (format 1)")
            raw = doc["releases"]
            if not isinstance(raw, list) or len(raw) > MAX_RELEASES:
                raise ValueError("'releases' must be a list")
            entries = []
            for item in raw:
                t = item["targets"]
                entries.append(
                    CatalogEntry(
                        name=_component(item["name"]),
                        version=_component(item["version"]),
                        kind=_text(item["kind"]),
                        size=_count(item["size"]),
                        targets=Targets(
                            stores=tuple(_text(s) for s in t["stores"]),
                            device_classes=tuple(_text(c) for c in t["device_classes"]),
                            ring=_text(t["ring"]),
                        ),
                        info_hash_v1=_text(item["info_hash_v1"]),
                        rollout_sequence=_count(item.get("rollout_sequence", 0)),  # absent before rollouts existed
                    )
                )
            seeds = tuple(_text(s) for s in doc.get("seeds", []))
            web_seeds = tuple(_url(s) for s in doc.get("web_seeds", []))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise PosswarmError(f"catalog from {source} is malformed ({exc}); is that a posswarm seeder or cache?") from None
        return cls(tuple(entries), seeds, web_seeds)


def _text(value: object) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= 256:
        raise ValueError(f"bad text field {value!r:.40}")
    return value


def _component(value: object) -> str:
    """A name or version: it becomes a URL path segment and a directory name (the manifest's one rule)."""
    text = _text(value)
    try:
        return check_component(text, "release name or version")
    except PosswarmError:
        raise ValueError(f"unsafe release name or version {text!r:.40}") from None


def _url(value: object) -> str:
    text = _text(value)
    if not text.startswith(("http://", "https://")):
        raise ValueError(f"web seed {text!r:.60} is not an http(s) URL")
    return text


def _count(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"bad size {value!r:.40}")
    return value
