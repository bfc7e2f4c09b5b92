"""Decisions over all of a node's releases: which listed ones to take, which to keep on disk (pure)."""

from __future__ import annotations

from dataclasses import dataclass

from posswarm.admission import version_key
from posswarm.lifecycle.states import Installed, NodeFacts, Record, ReleaseState
from posswarm.manifest import Targets
from posswarm.rollout import FETCH, INSTALL, WAIT, Decision
from posswarm.targeting import targets_device, targets_store

S = ReleaseState


@dataclass(frozen=True)
class Offer:
    """A release a catalog lists: its identity and the (unsigned) targets the catalog claims for it."""

    name: str
    version: str
    stores: tuple[str, ...] = ("*",)
    device_classes: tuple[str, ...] = ("*",)


def meant_for(offer: Offer, node: NodeFacts, decision: Decision | None) -> bool:
    """The signed rollout decides where there is one; otherwise the catalog's copy of the targets (a hint:
    the signed manifest is checked again when it arrives)."""
    if decision is not None:
        return decision.action in (FETCH, INSTALL, WAIT)  # WAIT: staged now, activated in its window
    targets = Targets(offer.stores, offer.device_classes, "all")
    return targets_store(targets, node.store) if node.is_cache else targets_device(targets, node.store, node.device_class)


def choose(offers: list[Offer], known: dict[str, Record], node: NodeFacts,
           decisions: dict[tuple[str, str], Decision], *, central_fresh: bool = True) -> list[Offer]:
    """The newest release of each name meant for this node now that it has not taken or refused yet.

    Older versions stay where they are installed; a paused, revoked or not-yet-promoted newer version
    leaves the next older one in play. A release whose manifest could not be fetched (LISTED) is offered
    again: a network failure is never a verdict. While central's signed state is stale (its timestamp
    expired past the grace: an offline store, or a source replaying an old world) nothing new is taken;
    what the node has stays, and signed revocations still apply.
    """
    if not central_fresh:
        return []
    newest: dict[str, Offer] = {}
    for o in offers:
        if not meant_for(o, node, decisions.get((o.name, o.version))):
            continue
        if o.name not in newest or version_key(o.version) > version_key(newest[o.name].version):
            newest[o.name] = o
    return [o for o in newest.values()
            if (r := known.get(f"{o.name}@{o.version}")) is None or r.state is S.LISTED]


def versions_to_keep(records: list[Record], node: NodeFacts, installed: dict[str, Installed]) -> dict[str, set[str]]:
    """Per release name, the versions whose release directories stay: the two newest (cache); current,
    previous, one waiting for its trial boot and whatever is still on its way (device). Everything else is garbage."""
    keep: dict[str, set[str]] = {}
    for name in sorted({r.name for r in records}):
        mine = [r for r in records if r.name == name and r.manifest is not None]
        if node.is_cache:
            keep[name] = set(sorted((r.version for r in mine), key=version_key)[-2:])
        else:
            disk = installed.get(name, Installed())
            keep[name] = {v for v in (disk.current, disk.previous, disk.pending) if v}
            keep[name] |= {r.version for r in mine if not r.ready and r.state is not S.REFUSED}
    return keep




def newest_carried(records: list[Record], name: str) -> str | None:
    """Cache: the newest version of ``name`` it has taken (the bar a downgrade is measured against)."""
    versions = [r.version for r in records if r.name == name and r.manifest is not None and r.state is not S.REFUSED]
    return max(versions, key=version_key) if versions else None
