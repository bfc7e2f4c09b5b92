"""A node's trust refresh keeps its connection to the source: publish → a cache knowing of it pays no handshake."""

from __future__ import annotations

import trio

from posswarm.trust.client import CentralTrust
from seeder.keys_cli import init_keys
from seeder.server import Seeder


async def _counting_proxy(target: tuple[str, int], accepted: list[int], *, task_status=trio.TASK_STATUS_IGNORED):
    """A TCP relay to ``target`` that counts the connections it is given."""

    async def pipe(source, sink):
        try:
            while data := await source.receive_some(65536):
                await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await sink.aclose()

    async def relay(client):
        accepted.append(1)
        upstream = await trio.open_tcp_stream(*target)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pipe, client, upstream)
            nursery.start_soon(pipe, upstream, client)

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(relay, listeners)


async def test_two_refreshes_from_one_source_use_one_connection(tmp_path):
    releases = tmp_path / "releases"
    keys = init_keys(tmp_path / "keys", releases)
    central = Seeder(releases, http=("127.0.7.2", 0), bt=("127.0.7.2", 0), data_dir=tmp_path / "data",
                     timestamp_key=keys.key("timestamp"))
    trust = CentralTrust(keys.root, tmp_path / "node-tuf", grace_s=0)
    trust.load()
    accepted: list[int] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(central.run)
        host, port = central.url.removeprefix("http://").split(":")
        proxy_port = await nursery.start(_counting_proxy, (host, int(port)), accepted)
        with trio.fail_after(20):
            first = await trust.refresh(f"http://127.0.0.1:{proxy_port}")
            second = await trust.refresh(f"http://127.0.0.1:{proxy_port}")
        assert first.versions == second.versions  # nothing changed at central in between
        assert len(accepted) == 1, f"{len(accepted)} connections for two refreshes"
        trust.close()
        nursery.cancel_scope.cancel()
