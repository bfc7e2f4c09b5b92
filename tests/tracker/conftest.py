"""A real redis-server on a loopback port in a temp dir, shared by the tracker tests that need one."""

import shutil
import socket
import subprocess
import time

import pytest


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
