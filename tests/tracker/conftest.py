"""Real processes the tracker tests share: a redis-server on a loopback port, posswarm-tracker itself."""

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio

BIN = Path(sys.executable).parent


@pytest.fixture
def artifacts(tmp_path) -> Path:
    """Where a test leaves what a person should look at (screenshots): $POSSWARM_TEST_ARTIFACTS, else tmp_path."""
    chosen = os.environ.get("POSSWARM_TEST_ARTIFACTS")
    directory = Path(chosen) if chosen else tmp_path / "artifacts"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


async def stop_with_the_test(process) -> None:
    """Run in the test's nursery: ``process`` is terminated (and waited for) when the test ends."""
    try:
        await trio.sleep_forever()
    finally:
        process.terminate()
        with trio.CancelScope(shield=True):
            await process.wait()


@pytest.fixture
def tracker_process(nursery):
    """``await tracker_process(config_path)`` -> the URL of a ``posswarm-tracker serve`` process, stopped after the test
    (``with_process=True``: the URL and the process, for a test that kills it)."""

    async def start(config: Path, *, with_process: bool = False):
        process = await trio.lowlevel.open_process([str(BIN / "posswarm-tracker"), "serve", "--plain-http",
                                                    "--config", str(config)],
                                                   stderr=subprocess.PIPE)

        async def drain():  # a full stderr pipe would stall the tracker
            async for _chunk in process.stderr:
                pass

        nursery.start_soon(stop_with_the_test, process)
        buffered = b""
        while chunk := await process.stderr.receive_some(65536):
            buffered += chunk
            found = re.search(rb"event='listening'.*url='(http://[^']+)'", buffered)
            if found:
                nursery.start_soon(drain)
                return (found.group(1).decode(), process) if with_process else found.group(1).decode()
        raise AssertionError(f"tracker exited before listening: {buffered.decode(errors='replace')}")

    return start


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    pytest.importorskip("redis", reason="redis-py is not installed")
    if shutil.which("redis-server") is None:
        pytest.skip("Debian redis-server is not installed (CI installs it)")
    workdir = tmp_path_factory.mktemp("redis")
    with socket.socket() as probe:  # redis-server cannot report a port-0 choice, so pick one first
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--dir", str(workdir), "--save", "",
         "--appendonly", "no", "--daemonize", "no"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 20
    log = b""
    try:
        while b"Ready to accept connections" not in log:  # redis prints it once the socket listens
            line = process.stdout.readline()
            if not line or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not come up: {log.decode(errors='replace')}")
            log += line
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)
