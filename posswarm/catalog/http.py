"""The catalog's HTTP face (Starlette): ``/catalog`` (an unsigned hint), ``/tuf/`` (central's signed state), and each
release's manifest and torrent."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from posswarm.catalog import changes
from posswarm.catalog.shelf import Shelf
from posswarm.rollout import ROLLOUT_NAME


def catalog_app(shelf: Shelf, *, extra_routes: list[Route] | None = None,
                tuf_file: Callable[[str], Awaitable[bytes | None]] | None = None) -> Starlette:
    """An ASGI app serving ``shelf``; the seeder adds its own routes (health, sales ingest) and reads ``/tuf/``
    through ``tuf_file`` (from the releases storage it may share with a second seeder)."""

    async def catalog(request: Request) -> Response:
        return JSONResponse(shelf.catalog().to_json())

    async def release_file(request: Request) -> Response:
        p = request.path_params
        if p["filename"] == ROLLOUT_NAME:
            data = shelf.rollout(p["name"], p["version"])
            if data is not None:
                return Response(data, media_type="application/octet-stream")
        path = shelf.file(p["name"], p["version"], p["filename"])
        if path is None or not path.is_file():
            return JSONResponse({"error": f"no release file {p['name']} {p['version']} {p['filename']}"}, 404)
        return FileResponse(path, media_type="application/octet-stream")

    async def tuf(request: Request) -> Response:
        name = request.path_params["filename"]
        data = await tuf_file(name) if tuf_file is not None else shelf.tuf.get(name)
        if data is None:
            return JSONResponse({"error": f"no TUF metadata {request.path_params['filename'][:80]}"}, 404)
        return Response(data, media_type="application/json")

    async def health(request: Request) -> Response:
        return JSONResponse({"ok": True, "releases": len(shelf.manifests())})

    routes = [
        Route("/catalog", catalog),
        changes.route(changes.ShelfChanges(shelf)),  # before /catalog/...: a follower's long poll
        Route("/releases/{name}/{version}/{filename:path}", release_file),  # FileResponse answers Range (BEP 19)
        Route("/tuf/{filename}", tuf),  # central's signed state (root, timestamp, snapshot, targets)
        Route("/healthz", health),
        *(extra_routes or []),
    ]
    return Starlette(routes=routes)
