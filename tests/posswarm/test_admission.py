"""Which signed releases a node takes: its store and class, no silent downgrade, nothing held."""

from __future__ import annotations

import pytest

from posswarm.admission import refusal, version_key
from posswarm.manifest import Manifest, Targets


def _manifest(version="2026.11", stores=("S0*",), classes=("pos",)) -> Manifest:
    return Manifest(name="pos-os", version=version, kind="image", files=(), total_size=0, payload_blake3=bytes(32),
                    info_hash_v1=bytes(20), info_hash_v2=bytes(32), piece_size=262144,
                    targets=Targets(stores, classes, "all"), created=0, key_id="k")


def _ask(m, role="device", store="S042", device_class="pos", newest=None, held=frozenset()):
    return refusal(m, role=role, store=store, device_class=device_class, newest_held=newest, held=set(held))


def test_a_release_for_this_store_and_class_is_taken():
    assert _ask(_manifest()) is None
    assert _ask(_manifest(), role="cache", device_class="cache") is None


@pytest.mark.parametrize(
    ("manifest", "kwargs", "says"),
    [
        (_manifest(stores=("S1*",)), {}, "not pos of store S042"),
        (_manifest(stores=("S1*",)), {"role": "cache"}, "not store S042"),
        (_manifest(classes=("kiosk",)), {}, "classes ['kiosk']"),
        (_manifest("2026.9"), {"newest": "2026.10"}, "older than 2026.10"),
        (_manifest("2026.11"), {"held": {"2026.11"}}, "held on this node"),
    ],
)
def test_refusals_name_the_release_and_the_reason(manifest, kwargs, says):
    reason = _ask(manifest, **kwargs)
    assert reason is not None and reason.startswith("release pos-os 2026.") and says in reason


def test_versions_order_numerically():
    assert version_key("2026.9") < version_key("2026.10") < version_key("2026.10.1")
    assert version_key("1.0") < version_key("1.1") and version_key("1.0-rc1") < version_key("1.0-rc2")
