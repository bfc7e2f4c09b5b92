"""The releases a node reads out of verified TUF targets, and the digest check every fetched document passes (pure)."""

from __future__ import annotations

import pytest
from tuf.api.metadata import TargetFile, Targets

from posswarm.catalog.model import CatalogEntry
from posswarm.manifest import Targets as ReleaseTargets
from posswarm.trust.state import CentralState, TrustError, check_bytes, digest_of, releases_of

MANIFEST = b"manifest bytes"
ROLLOUT = b"rollout bytes"
CUSTOM = {"kind": "image", "size": 10, "info_hash_v1": "ab" * 20,
          "targets": {"stores": ["S0*"], "device_classes": ["pos"], "ring": "canary"}}


def target(path: str, data: bytes, custom) -> TargetFile:
    d = digest_of(data)
    return TargetFile(d.length, {"sha256": d.sha256}, path, {"custom": custom} if custom is not None else {})


def test_a_release_and_its_rollout_come_out_of_the_signed_targets():
    md = digest_of(MANIFEST).sha256
    targets = Targets(targets={
        "pos-os/1.0/manifest.msgpack": target("pos-os/1.0/manifest.msgpack", MANIFEST, CUSTOM),
        "pos-os/1.0/rollout.msgpack": target("pos-os/1.0/rollout.msgpack", ROLLOUT,
                                             {"sequence": 3, "manifest_sha256": md}),
    })
    (entry,), skipped = releases_of(targets)
    assert skipped == ()
    assert (entry.name, entry.version, entry.rollout_sequence) == ("pos-os", "1.0", 3)
    assert entry.targets == ReleaseTargets(("S0*",), ("pos",), "canary")
    assert entry.manifest == digest_of(MANIFEST) and entry.rollout == digest_of(ROLLOUT)
    check_bytes(entry, "manifest", entry.manifest, MANIFEST)
    with pytest.raises(TrustError, match="^release pos-os 1.0: rollout does not match the digest"):
        check_bytes(entry, "rollout", entry.rollout, ROLLOUT + b"x")


@pytest.mark.parametrize(
    ("path", "custom", "says"),
    [
        ("../etc/1.0/manifest.msgpack", CUSTOM, "target ../etc"),
        ("pos-os/1.0/other.bin", CUSTOM, "not a manifest or rollout"),
        ("pos-os/1.0/manifest.msgpack", None, "custom fields unreadable"),
        ("pos-os/1.0/manifest.msgpack", {**CUSTOM, "size": -1}, "custom fields unreadable"),
    ],
)
def test_targets_this_build_cannot_read_are_skipped_with_one_line(path, custom, says):
    entries, skipped = releases_of(Targets(targets={path: target(path, MANIFEST, custom)}))
    assert entries == () and len(skipped) == 1 and says in skipped[0] and "\n" not in skipped[0]


def test_a_rollout_bound_to_another_manifest_drops_the_release():
    targets = Targets(targets={
        "pos-os/1.0/manifest.msgpack": target("pos-os/1.0/manifest.msgpack", MANIFEST, CUSTOM),
        "pos-os/1.0/rollout.msgpack": target("pos-os/1.0/rollout.msgpack", ROLLOUT,
                                             {"sequence": 3, "manifest_sha256": "0" * 64}),
    })
    entries, skipped = releases_of(targets)
    assert entries == () and "bound to another manifest" in skipped[0]


def test_an_unsigned_listing_is_refused_and_freshness_counts_the_grace():
    entry = CatalogEntry("pos-os", "1.0", "image", 1, ReleaseTargets(), "ab" * 20)
    with pytest.raises(TrustError, match="not listed in central's signed targets"):
        check_bytes(entry, "manifest", entry.manifest, MANIFEST)
    state = CentralState((), {}, expires=1000.0)
    assert state.fresh(1000.0, 0) and not state.fresh(1000.5, 0) and state.fresh(1500.0, 600)
