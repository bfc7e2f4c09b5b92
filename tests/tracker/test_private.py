"""Private mode over real HTTP: the tracker polls a catalog for published hashes and checks store passkeys."""

from urllib.parse import quote_from_bytes

import fastbencode
import httpx
import libtorrent as lt
import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from posswarm import http_service
from tracker import published, server
from tracker.announce import DENIED
from tracker.config import TrackerConfig

UNPUBLISHED = b"\x33" * 20
K17, K42, KC = "k17-a1B2c3D4e5F6g7H8i9J0", "k42-Z9y8X7w6V5u4T3s2R1q0", "kc-Mn0pQr1sTu2vWx3yZa4bC"


def hybrid_torrent(tmp_path) -> tuple[bytes, bytes, bytes]:
    payload = tmp_path / "image.bin"
    payload.write_bytes(bytes(range(256)) * 64)
    ct = lt.create_torrent(lt.list_files(str(payload)), 0, 0)
    lt.set_piece_hashes(ct, str(tmp_path), lambda i: None)
    torrent = lt.bencode(ct.generate())
    hashes = lt.torrent_info(torrent).info_hashes()
    return torrent, hashes.v1.to_bytes(), hashes.v2.to_bytes()[:20]


def entry(name: str, info_hash_v1_hex: str) -> dict:
    return {"name": name, "version": "2", "kind": "image", "size": 16384, "info_hash_v1": info_hash_v1_hex,
            "targets": {"stores": [], "device_classes": [], "ring": "all"},
            "manifest": f"/releases/{name}/2/manifest.msgpack", "torrent": f"/releases/{name}/2/release.torrent"}


def catalog_app(torrent: bytes, releases: list[dict]) -> Starlette:
    doc = {"format": 1, "seeds": [], "releases": releases}
    return Starlette(routes=[
        Route("/catalog", lambda request: JSONResponse(doc)),
        Route("/releases/pos-os/2/release.torrent", lambda request: Response(torrent)),
    ])


@pytest.fixture
async def private(nursery, tmp_path):
    torrent, v1, v2 = hybrid_torrent(tmp_path)
    seeder = await nursery.start(http_service.run, catalog_app(torrent, [entry("pos-os", v1.hex())]), "127.0.0.1")
    config = TrackerConfig(port=0, open=False, catalog=f"{seeder}/catalog",
                           passkeys={"store-17": K17, "store-42": K42}, central_passkeys=[KC], open_stats=True)
    url = await nursery.start(server.run, config)  # started() comes after the first catalog poll
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        yield client, v1, v2


async def announce(client, path, info_hash, **extra):
    q = {"info_hash": info_hash, "peer_id": b"-TR3000-" + b"x" * 12, "port": 51413, "uploaded": 0,
         "downloaded": 0, "left": 10, "ip": "10.0.0.7", **extra}
    raw = "&".join(f"{k}={quote_from_bytes(v if isinstance(v, bytes) else str(v).encode(), safe='')}"
                   for k, v in q.items())
    return fastbencode.bdecode((await client.get(f"{path}?{raw}")).content)


async def test_only_published_hashes_with_a_known_passkey_are_tracked(private):
    client, v1, v2 = private
    # No passkey, a malformed one, an unknown one: the same words, so a guesser learns nothing.
    for path in ("/announce", "/announce/k9!", "/announce/k99"):
        assert (await announce(client, path, v1))[b"failure reason"] == DENIED.encode()
    assert b"not a published release" in (await announce(client, f"/announce/{K17}", UNPUBLISHED))[b"failure reason"]
    assert b"does not match the passkey" in (await announce(client, f"/announce/{K17}", v1, store="store-42",
                                                            role="device"))[b"failure reason"]
    # Both hashes of the hybrid torrent: v1 from the catalog, v2 from the torrent it points to.
    for info_hash in (v1, v2):
        assert b"failure reason" not in await announce(client, f"/announce/{K17}", info_hash)
    assert b"failure reason" not in await announce(client, f"/announce/{KC}", v1, role="seeder", node="seeder",
                                                   left=0, store="central")
    stats = (await client.get("/stats")).json()
    # The plain client (no release=, so keyed by info-hash) was placed in its passkey's store.
    assert "store-17" in stats["releases"][v1.hex()]["stores"]

    files = fastbencode.bdecode((await client.get(f"/scrape/{K17}")).content)[b"files"]
    assert set(files) == {v1, v2}
    assert b"failure reason" in fastbencode.bdecode((await client.get("/scrape")).content)


async def test_a_hostile_catalog_costs_only_its_bad_entries(nursery, tmp_path):
    torrent, v1, v2 = hybrid_torrent(tmp_path)
    releases = [entry("pos-os", v1.hex()), entry("bad-hex", "zz" * 20), entry("gone", "ab" * 20)]
    seeder = await nursery.start(http_service.run, catalog_app(torrent, releases), "127.0.0.1")
    async with httpx.AsyncClient(timeout=10) as client:
        hashes = await published.published_hashes(client, f"{seeder}/catalog", {})
    # The good release by both hashes; the one whose torrent is missing by v1 alone; bad hex not at all.
    assert hashes == {v1, v2, bytes.fromhex("ab" * 20)}
