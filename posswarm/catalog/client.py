"""Read a catalog over HTTP and fetch a release's manifest and torrent, verified before anyone uses them."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from posswarm.catalog.model import Catalog, CatalogEntry
from posswarm.errors import PosswarmError
from posswarm.manifest import Manifest, verify_manifest
from posswarm.release import torrent_info_hashes

MAX_MANIFEST_BYTES = 64 << 20
MAX_TORRENT_BYTES = 64 << 20


@dataclass(frozen=True)
class FetchedRelease:
    """A manifest whose signature checked out and the torrent whose info-hashes it signs."""

    manifest: Manifest
    manifest_bytes: bytes
    torrent_bytes: bytes


async def fetch_catalog(client: httpx.AsyncClient, base_url: str) -> Catalog:
    try:
        response = await client.get(f"{base_url.rstrip('/')}/catalog")
        response.raise_for_status()
        doc = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise PosswarmError(f"catalog at {base_url}: cannot read it ({_describe(exc)}); is the server up?") from None
    return Catalog.from_json(doc, source=base_url)


async def fetch_release(client: httpx.AsyncClient, base_url: str, entry: CatalogEntry, public_key) -> FetchedRelease:
    """Download manifest + torrent for ``entry``; PosswarmError unless the central key signed both."""
    base = f"{base_url.rstrip('/')}{entry.path}"
    manifest_bytes = await _get(client, f"{base}/manifest.msgpack", MAX_MANIFEST_BYTES, entry)
    try:
        manifest = verify_manifest(manifest_bytes, public_key)
    except PosswarmError as exc:
        text = str(exc)
        raise PosswarmError(text if text.startswith("release ") else f"release {entry.release_id}: {text}") from None
    if (manifest.name, manifest.version) != (entry.name, entry.version):
        raise PosswarmError(
            f"release {entry.release_id}: {base_url} served the manifest of {manifest.release_id} (catalog is wrong)"
        )
    torrent_bytes = await _get(client, f"{base}/release.torrent", MAX_TORRENT_BYTES, entry)
    if torrent_info_hashes(torrent_bytes) != (manifest.info_hash_v1, manifest.info_hash_v2):
        raise PosswarmError(
            f"release {manifest.release_id}: torrent from {base_url} does not match the signed manifest (torrent replaced?)"
        )
    return FetchedRelease(manifest, manifest_bytes, torrent_bytes)


async def _get(client: httpx.AsyncClient, url: str, limit: int, entry: CatalogEntry) -> bytes:
    try:
        async with client.stream("GET", url) as response:
            response.raise_for_status()
            body = bytearray()
            async for part in response.aiter_bytes():
                body += part
                if len(body) > limit:
                    raise PosswarmError(f"release {entry.release_id}: {url} is larger than {limit} bytes; refused")
            return bytes(body)
    except httpx.HTTPError as exc:
        raise PosswarmError(f"release {entry.release_id}: cannot fetch {url} ({_describe(exc)})") from None


def _describe(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]
