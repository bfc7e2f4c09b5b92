"""A node fetching releases over real HTTP refuses anything central did not sign and list, before any download."""

from __future__ import annotations

import shutil
from dataclasses import replace

import httpx
import pytest
import trio

from posswarm import http_service
from posswarm.catalog.client import fetch_catalog, fetch_release
from posswarm.catalog.http import catalog_app
from posswarm.catalog.shelf import Shelf
from posswarm.errors import PosswarmError, Unreachable
from posswarm.keys import generate_keypair, load_private_key, load_public_key
from posswarm.trust.state import digest_of
from seeder.publish import publish


def signed(entry, directory):
    """``entry`` as central's signed targets list it: with the digest of the manifest in ``directory``."""
    return replace(entry, manifest=digest_of((directory / "manifest.msgpack").read_bytes()))


@pytest.fixture
def central(tmp_path):
    private, public = generate_keypair(tmp_path / "keys")
    other_private, _ = generate_keypair(tmp_path / "other")
    payload = tmp_path / "image.bin"
    payload.write_bytes(bytes(range(256)) * 4096)
    out = tmp_path / "releases"
    good = publish(payload, name="pos-os", version="1.0", private_key=load_private_key(private), out=out)
    forged = publish(payload, name="pos-os", version="1.1", private_key=load_private_key(other_private), out=out)
    return {"public": load_public_key(public), "out": out, "good": good, "forged": forged}


async def _serve(nursery, shelf) -> str:
    return await nursery.start(http_service.run, catalog_app(shelf), "127.0.0.1", 0)


async def test_a_good_release_is_fetched_and_verified(central):
    shelf = Shelf()
    shelf.put(central["good"], central["out"] / "pos-os" / "1.0")
    async with trio.open_nursery() as nursery:
        url = await _serve(nursery, shelf)
        async with httpx.AsyncClient() as client:
            catalog = await fetch_catalog(client, url)
            fetched = await fetch_release(client, url, signed(catalog.releases[0], central["out"] / "pos-os" / "1.0"),
                                          central["public"])
            # The unsigned catalog alone is never acted on: its entry has no signed digest.
            with pytest.raises(PosswarmError, match="not listed in central's signed targets"):
                await fetch_release(client, url, catalog.releases[0], central["public"])
        assert fetched.manifest == central["good"]
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("tamper", "says"),
    [
        ("manifest_byte", "release pos-os 1.0: manifest does not match the digest in central's signed targets"),
        ("other_key", "is signed by key"),
        ("torrent", "torrent from"),
    ],
)
async def test_tampered_releases_are_refused_with_one_line(central, tamper, says):
    directory = central["out"] / "pos-os" / "1.0"
    manifest = directory / "manifest.msgpack"
    listed = digest_of(manifest.read_bytes())
    if tamper == "manifest_byte":
        data = bytearray(manifest.read_bytes())
        data[len(data) // 2] ^= 0x01
        manifest.write_bytes(bytes(data))
    elif tamper == "other_key":
        shutil.copy(central["out"] / "pos-os" / "1.1" / "manifest.msgpack", manifest)
        listed = digest_of(manifest.read_bytes())  # even listed, a manifest a release key did not sign is refused
    elif tamper == "torrent":
        torrent = directory / "release.torrent"
        data = bytearray(torrent.read_bytes())
        data[data.index(b"11:pieces root32:") + 20] ^= 0x01  # a file's merkle root, inside the info dict
        torrent.write_bytes(bytes(data))
    shelf = Shelf()
    shelf.put(central["good"], directory)
    async with trio.open_nursery() as nursery:
        url = await _serve(nursery, shelf)
        async with httpx.AsyncClient() as client:
            catalog = await fetch_catalog(client, url)
            with pytest.raises(PosswarmError) as caught:
                await fetch_release(client, url, replace(catalog.releases[0], manifest=listed), central["public"])
        message = str(caught.value)
        assert says in message and "\n" not in message
        # Bytes other than central listed are the source's fault: retried, never a verdict on the release.
        assert isinstance(caught.value, Unreachable) == (tamper == "manifest_byte")
        nursery.cancel_scope.cancel()


async def test_a_catalog_that_is_not_one_is_a_clear_error():
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def wrong(request):
        return JSONResponse({"hello": "world"})

    async with trio.open_nursery() as nursery:
        url = await nursery.start(http_service.run, Starlette(routes=[Route("/catalog", wrong)]), "127.0.0.1", 0)
        async with httpx.AsyncClient() as client:
            with pytest.raises(PosswarmError, match="is malformed"):
                await fetch_catalog(client, url)
        with pytest.raises(PosswarmError, match="cannot read it"):
            async with httpx.AsyncClient() as client:
                await fetch_catalog(client, "http://127.0.0.1:9")
        nursery.cancel_scope.cancel()


def test_a_release_listed_before_its_manifest_is_served_is_asked_again_within_a_second():
    from posswarm.catalog.follower import MAX_BACKOFF, UNREACHABLE_RETRY_S, next_poll_s

    assert next_poll_s(10.0, 0, 0) == 10.0  # nothing wrong: the poll interval (the push comes first anyway)
    # a 404 for a listed release (the source lists it a moment before it serves it): 0.1, 0.2, 0.4 ... s
    waits = [next_poll_s(10.0, 0, n) for n in range(1, 9)]
    assert waits[0] == UNREACHABLE_RETRY_S and sum(waits[:4]) < 2.0
    assert waits == sorted(waits) and waits[-1] == 10.0  # never past the poll interval: no storm on a lasting 404
    assert next_poll_s(1.0, 0, 5) == 1.0
    # no source answering backs off as before
    assert next_poll_s(10.0, 3, 0) == 10.0 * min(4, MAX_BACKOFF)
