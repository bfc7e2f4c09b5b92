"""Two seeders on one shared releases directory: the signed state either serves is never older than the other's."""

from __future__ import annotations

import json

from posswarm.keys import load_private_key
from seeder.keys_cli import init_keys
from seeder.server import Seeder
from seeder.tuf_repository import Repository


def _version(document: bytes | None) -> int:
    assert document is not None
    return json.loads(document)["signed"]["version"]


def _seeder(releases, keys) -> Seeder:
    return Seeder(releases, http=("127.0.0.1", 0), bt=("127.0.0.1", 0), timestamp_key=keys.key("timestamp"),
                  timestamp_expiry_s=3600, data_dir=releases.parent / "data")


async def test_a_timestamp_the_other_seeder_signed_is_served_before_this_one_rescans(tmp_path):
    releases = tmp_path / "releases"
    keys = init_keys(tmp_path / "keys", releases)
    first, second = _seeder(releases, keys), _seeder(releases, keys)
    await first.scan()
    await second.scan()
    before = _version(await second.tuf_file("timestamp.json"))
    # The other seeder renews (its scan, between two of this one's); a cache read it from the other one.
    repository = Repository(releases)
    with repository.lock():
        assert repository.renew_timestamp(load_private_key(keys.key("timestamp")), 3600, force=True)
    assert _version(await first.tuf_file("timestamp.json")) == before + 1
    # Asked next, this seeder answers with that version too, though its own scan has not run since.
    assert _version(await second.tuf_file("timestamp.json")) == before + 1
    assert second.shelf.tuf["timestamp.json"] == first.shelf.tuf["timestamp.json"]


async def test_a_seeder_renewing_after_the_other_finds_it_fresh_and_signs_no_second_version(tmp_path):
    releases = tmp_path / "releases"
    keys = init_keys(tmp_path / "keys", releases)
    first, second = _seeder(releases, keys), _seeder(releases, keys)
    repository = Repository(releases)
    # A timestamp due for renewal (less than half its life left), as both seeders find it at their next scans.
    with repository.lock():
        repository.renew_timestamp(load_private_key(keys.key("timestamp")), 60, force=True)
    due = _version(repository.read("timestamp.json"))
    await first.scan()
    await second.scan()
    assert _version(repository.read("timestamp.json")) == due + 1  # one renewal, not one per seeder
    assert first.shelf.tuf["timestamp.json"] == second.shelf.tuf["timestamp.json"] == repository.read("timestamp.json")
