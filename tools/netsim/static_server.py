"""A Range-capable static file server (Starlette under hypercorn): the HTTP baselines' registry and store proxy."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import trio
from starlette.applications import Starlette
from starlette.staticfiles import StaticFiles

from posswarm import http_service, logs
from posswarm.endpoint import parse_endpoint
from posswarm.service import run_until_signalled

log = logs.get("static")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.netsim.static_server", description=__doc__)
    p.add_argument("directory", type=Path, help="directory to serve")
    p.add_argument("--listen", required=True, help="HOST:PORT (port 0 = any free port)")
    args = p.parse_args(argv)
    logs.configure("info", component="static")
    host, port = parse_endpoint(args.listen, what="--listen", any_port=True)
    # Starlette's FileResponse answers Range with 206, as nginx or an object store would
    app = Starlette()
    app.mount("/", StaticFiles(directory=args.directory))

    async def serve(*, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            url = await nursery.start(http_service.run, app, host, port)
            log.info("listening", url=url, directory=str(args.directory))
            task_status.started(url)

    return run_until_signalled(serve, program="static_server")


if __name__ == "__main__":
    sys.exit(main())
