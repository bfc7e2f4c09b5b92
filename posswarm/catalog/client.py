"""Read a catalog over HTTP and fetch a release's manifest and torrent, verified before anyone uses them."""

from __future__ import annotations

import json
from dataclasses import dataclass

import httpx

from posswarm.catalog.model import MAX_CATALOG_BYTES, Catalog, CatalogEntry
from posswarm.errors import PosswarmError, Unreachable
from posswarm.manifest import MAX_MANIFEST_BYTES, Manifest, verify_manifest
from posswarm.release import MANIFEST_NAME, MAX_TORRENT_BYTES, TORRENT_NAME, torrent_info_hashes
from posswarm.trust.state import TrustError, check_bytes


@dataclass(frozen=True)
class FetchedRelease:
    """A manifest whose signature checked out and the torrent whose info-hashes it signs."""

    manifest: Manifest
    manifest_bytes: bytes
    torrent_bytes: bytes


async def fetch_catalog(client: httpx.AsyncClient, base_url: str) -> Catalog:
    """The catalog at ``base_url``: Unreachable when it cannot be had, PosswarmError when it is garbage."""
    url = f"{base_url.rstrip('/')}/catalog"
    try:
        body = await get_bounded(client, url, MAX_CATALOG_BYTES, what=f"catalog at {base_url}")
    except Unreachable as exc:
        raise Unreachable(f"catalog at {base_url}: cannot read it ({exc.detail}); is the server up?") from None
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise PosswarmError(f"catalog at {base_url}: not JSON ({_describe(exc)}); is that a posswarm server?") from None
    return Catalog.from_json(doc, source=base_url)


async def fetch_release(client: httpx.AsyncClient, base_url: str, entry: CatalogEntry, public_key) -> FetchedRelease:
    """Download manifest + torrent for ``entry``; PosswarmError unless the manifest is the one central's signed
    targets list, a release key signed it, and the torrent matches it (Unreachable, its subclass, when the
    network failed: that is retried, never remembered)."""
    base = f"{base_url.rstrip('/')}{entry.path}"
    what = f"release {entry.release_id}"
    if entry.manifest is None:  # before any byte is fetched: an unsigned listing is never acted on
        check_bytes(entry, "manifest", None, b"")
    manifest_bytes = await get_bounded(client, f"{base}/{MANIFEST_NAME}", MAX_MANIFEST_BYTES, what=what)
    try:
        check_bytes(entry, "manifest", entry.manifest, manifest_bytes)
    except TrustError as exc:  # the source's fault, not the release's: a forging or stale cache; asked again
        raise Unreachable(f"{exc}; from {base_url}, asked again on the next poll", "other bytes than central listed") from None
    try:
        manifest = verify_manifest(manifest_bytes, public_key)
    except PosswarmError as exc:
        text = str(exc)
        raise PosswarmError(text if text.startswith("release ") else f"release {entry.release_id}: {text}") from None
    if (manifest.name, manifest.version) != (entry.name, entry.version):
        raise PosswarmError(
            f"release {entry.release_id}: {base_url} served the manifest of {manifest.release_id} (catalog is wrong)"
        )
    torrent_bytes = await get_bounded(client, f"{base}/{TORRENT_NAME}", MAX_TORRENT_BYTES, what=what)
    if torrent_info_hashes(torrent_bytes) != (manifest.info_hash_v1, manifest.info_hash_v2):
        raise PosswarmError(
            f"release {manifest.release_id}: torrent from {base_url} does not match the signed manifest (torrent replaced?)"
        )
    return FetchedRelease(manifest, manifest_bytes, torrent_bytes)


async def get_bounded(client: httpx.AsyncClient, url: str, limit: int, *, what: str,
                      timeout: float | None = None) -> bytes:
    """The body at ``url``, never holding more than ``limit`` bytes of it: a declared or streamed body over
    the limit is refused before it is read. Unreachable for network and HTTP errors. ``timeout`` overrides
    the client's (a long poll waits longer than a fetch may)."""
    extra = {} if timeout is None else {"timeout": timeout}
    try:
        async with client.stream("GET", url, **extra) as response:
            response.raise_for_status()
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limit:
                raise PosswarmError(f"{what}: {url} is {declared} bytes, over the limit of {limit}; refused")
            body = bytearray()
            async for part in response.aiter_bytes():
                body += part
                if len(body) > limit:
                    raise PosswarmError(f"{what}: {url} is larger than {limit} bytes; refused")
            return bytes(body)
    except httpx.HTTPError as exc:
        raise Unreachable(f"{what}: cannot fetch {url} ({_describe(exc)})", _describe(exc)) from None


def _describe(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]
