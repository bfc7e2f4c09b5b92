"""Central's rollout config (``rollouts.toml``): the ring order, the stores each ring adds, and named store groups."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from posswarm.errors import PosswarmError
from posswarm.rollout import MAX_RINGS, RING_NAME, RING_NAME_RULE
from posswarm.toml_file import load_toml

CONFIG_NAME = "rollouts.toml"  # default place: RELEASES/rollouts.toml
_KEYS = {"rings", "ring_stores", "groups"}


@dataclass(frozen=True)
class RolloutsConfig:
    """Rings in promotion order, each ring's store patterns, and group name -> store patterns."""

    rings: tuple[str, ...] = ("all",)
    ring_stores: dict[str, tuple[str, ...]] = field(default_factory=lambda: {"all": ("*",)})
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)
    source: str = "the built-in default (one ring, all)"

    def check_ring(self, ring: str) -> str:
        if ring not in self.rings:
            raise PosswarmError(f"ring {ring!r}: not defined in {self.source} (rings: {', '.join(self.rings)})")
        return ring

    def reached(self, ring: str) -> tuple[str, ...]:
        """Store patterns of every ring up to and including ``ring``: promotion only ever adds stores."""
        upto = self.rings[: self.rings.index(self.check_ring(ring)) + 1]
        return _unique(p for r in upto for p in self.ring_stores[r])

    def next_ring(self, ring: str) -> str | None:
        i = self.rings.index(self.check_ring(ring))
        return self.rings[i + 1] if i + 1 < len(self.rings) else None

    def expand_groups(self, groups: list[str]) -> tuple[str, ...]:
        for g in groups:
            if g not in self.groups:
                known = ", ".join(sorted(self.groups)) or "none defined"
                raise PosswarmError(f"group {g!r}: not defined in {self.source} (groups: {known})")
        return _unique(p for g in groups for p in self.groups[g])


def _unique(patterns) -> tuple[str, ...]:
    return tuple(dict.fromkeys(patterns))


def load(path: Path) -> RolloutsConfig:
    """The config in TOML file ``path``; a one-line PosswarmError naming the file and the key otherwise."""
    raw = load_toml(path, "rollouts config", fix="check --rollout-config")
    return parse(raw, source=str(path))


def parse(raw: dict, *, source: str) -> RolloutsConfig:
    def bad(what: str) -> PosswarmError:
        return PosswarmError(f"rollouts config {source}: {what} (see docs/rollouts.md)")

    unknown = set(raw) - _KEYS
    if unknown:
        raise bad(f"unknown key {sorted(unknown)[0]!r} (keys: {', '.join(sorted(_KEYS))})")
    rings = raw.get("rings", ["all"])
    if not isinstance(rings, list) or not 0 < len(rings) <= MAX_RINGS:
        raise bad(f"'rings' must be a list of 1-{MAX_RINGS} ring names in promotion order")
    for r in rings:
        if not isinstance(r, str) or not RING_NAME.fullmatch(r):
            raise bad(f"ring {r!r} is not a name ({RING_NAME_RULE})")
    if len(set(rings)) != len(rings):
        raise bad("'rings' names a ring twice")
    ring_stores = _pattern_table(raw.get("ring_stores", {}), "ring_stores", bad)
    for r in ring_stores:
        if r not in rings:
            raise bad(f"ring_stores.{r}: ring {r!r} is not in 'rings' ({', '.join(rings)})")
    for r in rings:
        if r not in ring_stores:
            if r != "all":
                raise bad(f"ring {r!r} has no ring_stores.{r} (list its store ids or globs)")
            ring_stores[r] = ("*",)  # a ring called all reaches every store unless told otherwise
    groups = _pattern_table(raw.get("groups", {}), "groups", bad)
    return RolloutsConfig(tuple(rings), ring_stores, groups, source)


def _pattern_table(table, key: str, bad) -> dict[str, tuple[str, ...]]:
    if not isinstance(table, dict):
        raise bad(f"'{key}' must be a table of name = [store ids or globs]")
    out = {}
    for name, patterns in table.items():
        if not RING_NAME.fullmatch(name):
            raise bad(f"{key}.{name}: {name!r} is not a name ({RING_NAME_RULE})")
        if (not isinstance(patterns, list) or not patterns
                or not all(isinstance(p, str) and 0 < len(p) <= 256 for p in patterns)):
            raise bad(f"{key}.{name} must be a non-empty list of store ids or globs")
        out[name] = tuple(patterns)
    return out


def for_releases(releases: Path, explicit: Path | None) -> RolloutsConfig | None:
    """``explicit`` if given, else RELEASES/rollouts.toml if present, else None (no rings configured)."""
    if explicit is not None:
        return load(explicit)
    default = Path(releases) / CONFIG_NAME
    return load(default) if default.is_file() else None
