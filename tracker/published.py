"""Private mode: poll the seeder's catalog and tell Access which info-hashes are published releases."""

from __future__ import annotations

import re
import ssl

import httpx
import trio

from posswarm import logs
from posswarm.catalog.client import fetch_catalog, get_bounded
from posswarm.errors import PosswarmError
from posswarm.release import MAX_TORRENT_BYTES, TORRENT_NAME, torrent_info_hashes
from tracker.access import Access

_HEX40 = re.compile(r"[0-9a-fA-F]{40}")
log = logs.get("tracker")


def catalog_base(url: str) -> str:
    """``http://seeder:8000/catalog`` or ``http://seeder:8000`` -> ``http://seeder:8000``."""
    return url.rstrip("/").removesuffix("/catalog")


def catalog_verify(ca: str | None) -> ssl.SSLContext | bool:
    """How the seeder's HTTPS is checked: under ``catalog_ca`` when given, else the system's CAs."""
    return ssl.create_default_context(cafile=ca) if ca else True


async def published_hashes(client: httpx.AsyncClient, catalog_url: str, known: dict[str, bytes]) -> set[bytes]:
    """Every info-hash of the catalog's releases: v1 from the catalog, v2 (truncated to 20 bytes, as
    clients announce a hybrid torrent, BEP 52) from each release's torrent. ``known`` caches v1 hex ->
    v2 across polls, so a torrent is fetched once."""
    base = catalog_base(catalog_url)
    catalog = await fetch_catalog(client, base)
    hashes: set[bytes] = set()
    for entry in catalog.releases:
        if not _HEX40.fullmatch(entry.info_hash_v1):
            log.warning("catalog.bad_info_hash", release=entry.release_id)
            continue
        v1 = bytes.fromhex(entry.info_hash_v1)
        hashes.add(v1)
        if entry.info_hash_v1 not in known:
            try:
                torrent = await get_bounded(client, f"{base}{entry.path}/{TORRENT_NAME}", MAX_TORRENT_BYTES,
                                            what=f"release {entry.release_id}")
                torrent_v1, v2 = torrent_info_hashes(torrent)
            except (httpx.HTTPError, PosswarmError) as exc:
                log.info("catalog.torrent_unreadable", release=entry.release_id, reason=str(exc))
                continue  # v1 alone is tracked; the v2 hash follows on a later poll
            if torrent_v1 != v1:
                log.warning("catalog.torrent_mismatch", release=entry.release_id)
                continue
            known[entry.info_hash_v1] = v2[:20]
        hashes.add(known[entry.info_hash_v1])
    return hashes


async def run(access: Access, catalog_url: str, every: float, *, ca: str | None = None,
              task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Poll forever; ``started()`` after the first poll, successful or not, so start-up never hangs on the seeder."""
    known: dict[str, bytes] = {}
    started = False
    verify = catalog_verify(ca)
    async with httpx.AsyncClient(timeout=10.0, verify=verify) as client:
        while True:
            try:
                hashes = await published_hashes(client, catalog_url, known)
            except PosswarmError as exc:
                # Keep the last known set: a seeder restart must not stop every store's rollout.
                log.warning("catalog.unreadable", url=catalog_url, reason=str(exc))
            else:
                if hashes != access.published:
                    log.info("catalog.published", torrents=len(hashes))
                access.publish(hashes)
            if not started:
                task_status.started()
                started = True
            await trio.sleep(every)
