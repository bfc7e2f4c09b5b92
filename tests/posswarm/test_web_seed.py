"""BEP 19 web seeds: the catalog's HTTP serves chunks with Range, and libtorrent completes from it alone."""

from __future__ import annotations

import httpx
import trio

from posswarm import http_service
from posswarm.catalog.http import catalog_app
from posswarm.catalog.model import Catalog
from posswarm.catalog.shelf import Shelf
from posswarm.keys import generate_keypair, load_private_key
from posswarm.torrent import SessionConfig, TorrentFinished, TorrentSession
from seeder.publish import publish


async def test_a_cache_completes_from_the_seeders_http_alone_and_counts_it_as_web(tmp_path):
    key = load_private_key(generate_keypair(tmp_path / "keys")[0])
    payload = tmp_path / "pos.img"
    payload.write_bytes(bytes(range(256)) * (6 * 4096) + b"tail")
    manifest = publish(payload, name="pos-os", version="1.0", private_key=key, out=tmp_path / "releases")
    release_dir = tmp_path / "releases" / "pos-os" / "1.0"
    shelf = Shelf()
    shelf.put(manifest, release_dir)
    async with trio.open_nursery() as nursery:
        url = await nursery.start(http_service.run, catalog_app(shelf), "127.0.6.1", 0)
        shelf.web_seeds = (url,)
        async with httpx.AsyncClient() as client:
            catalog = Catalog.from_json((await client.get(f"{url}/catalog")).json(), source=url)
            # Web seeds serve the stored (compressed) chunk files, the same bytes the torrent lists.
            chunk = max((release_dir / "chunks").glob("*/*"), key=lambda p: p.stat().st_size)
            part = await client.get(f"{url}/releases/pos-os/1.0/chunks/{chunk.parent.name}/{chunk.name}",
                                    headers={"Range": "bytes=10-19"})
            assert part.status_code == 206 and part.content == chunk.read_bytes()[10:20]
            sneaky = await client.get(f"{url}/releases/pos-os/1.0/chunks/../manifest.msgpack.x")
            assert sneaky.status_code == 404
        web = catalog.web_seeds_of(catalog.releases[0])
        assert web == [f"{url}/releases/pos-os/1.0/"]

        cache = await nursery.start(TorrentSession(SessionConfig("127.0.6.2", lan_network="127.0.6.0/30")).run)
        events = cache.subscribe()
        await cache.add("pos-os@1.0", (release_dir / "release.torrent").read_bytes(), tmp_path / "cache",
                        web_seeds=web)
        with trio.fail_after(30):
            async for event in events:
                if isinstance(event, TorrentFinished):
                    break
        p = cache.progress("pos-os@1.0")
        unique = sum(c.size for c in manifest.unique_chunks())  # the repetitive payload dedupes into few chunks
        assert p.web_bytes >= unique and p.lan_bytes == 0 and p.wan_bytes == 0
        for c in manifest.unique_chunks():
            got = (tmp_path / "cache" / "chunks" / c.hex[:2] / c.hex).read_bytes()
            assert got == (release_dir / "chunks" / c.hex[:2] / c.hex).read_bytes() and len(got) == c.size
        assert any(c.compressed for c in manifest.unique_chunks())
        nursery.cancel_scope.cancel()
