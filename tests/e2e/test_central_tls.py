"""Central over HTTPS: an on-path proxy with a certificate of its own gets nothing from a cache, and the
cache goes on through central once the path is clean. Real seeder, real cache node, real TLS."""

from __future__ import annotations

import datetime
import subprocess
from functools import partial

import httpx
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from posswarm import http_service
from posswarm.identity.certificate import authority_certificate, issue_server
from tools.lab import Lab, bin_path, write_image

NAME = "pos-os"


def _own_certificate(tmp_path, host: str) -> http_service.ServerTls:
    """What an attacker on the path can have: a certificate for central's address from a CA of its own."""
    now, day = datetime.datetime.now(datetime.UTC), datetime.timedelta(days=1)
    ca_key, key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    ca = authority_certificate(ca_key, now=now, lifetime=day)
    (tmp_path / "mitm.crt").write_bytes(issue_server(ca_key, ca, key.public_key(), [host], now=now, lifetime=day) + ca)
    (tmp_path / "mitm.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
    return http_service.ServerTls(tmp_path / "mitm.crt", tmp_path / "mitm.key")


async def _proxy(lab: Lab, seen: list[str], *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Relays everything to central and counts what it could read (it would rewrite prices if it got any)."""
    async with httpx.AsyncClient(verify=lab.central_tls, timeout=10) as client:
        async def relay(request: Request) -> Response:
            seen.append(request.url.path)
            upstream = await client.get(f"{lab.seeder_url}{request.url.path}", params=request.query_params)
            return Response(upstream.content, status_code=upstream.status_code)

        host = f"127.{lab.net}.0.9"
        app = Starlette(routes=[Route("/{path:path}", relay)])
        tls = _own_certificate(lab.root, host)
        async with trio.open_nursery() as nursery:
            task_status.started(await nursery.start(partial(http_service.run, app, host, 0, tls=tls)))


async def test_an_on_path_proxy_with_its_own_certificate_reads_nothing(tmp_path):
    lab = Lab(tmp_path, devices=1)  # only its cache is started
    seen: list[str] = []
    async with trio.open_nursery() as nursery:
        with trio.fail_after(60):
            await lab.start_central(nursery)
            await lab.publish(write_image(tmp_path / "a.img", 1, seed=1), "1.0", name=NAME)
            proxy = await nursery.start(_proxy, lab, seen)
            # The proxy answers plain clients that trust it: it is a working relay, not a dead port.
            async with httpx.AsyncClient(verify=False) as client:
                assert (await client.get(f"{proxy}/catalog")).status_code == 200
            seen.clear()
            await lab.start_node(nursery, lab.cache, extra={"central": {"catalog_url": proxy}})
            while not ((lab.status_of(lab.cache) or {}).get("catalog") or {}).get("error"):
                await trio.sleep(0.2)  # status.json is rewritten every 0.5 s
        error = lab.status_of(lab.cache)["catalog"]["error"]
        assert "CERTIFICATE_VERIFY_FAILED" in error or "certificate verify failed" in error, error
        assert "\n" not in error
        assert seen == []  # the handshake failed before a single request reached the proxy
        assert lab.release_of(lab.cache, NAME, "1.0") is None
        lab.kill(lab.cache)
        with trio.fail_after(60):  # the same cache through central itself takes the release
            await lab.start_node(nursery, lab.cache)
            while not lab.installed(lab.cache, NAME, "1.0"):
                await trio.sleep(0.2)
        nursery.cancel_scope.cancel()


def test_serve_refuses_plain_http_unless_told(tmp_path):
    args = [bin_path("posswarm-seeder"), "serve", "--releases", str(tmp_path), "--listen", "127.0.0.1:0"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "give --tls-cert and --tls-key" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    both = subprocess.run([*args, "--plain-http", "--tls-cert", "x"], capture_output=True, text=True, timeout=60)
    assert both.returncode != 0 and "contradict" in both.stderr
