"""A throwaway PostgreSQL server on a loopback port for benchmarks: initdb, start, and remove it afterwards."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from glob import glob
from pathlib import Path

from posswarm.errors import PosswarmError


def server_bin() -> Path | None:
    """The newest installed server's bin directory (Debian's /usr/lib/postgresql/N/bin), or None."""
    found = sorted(glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


@contextmanager
def throwaway_postgres(settings: dict[str, str] | None = None, prefix: tuple[str, ...] = ()) -> Iterator[str]:
    """Yield a ``postgresql://`` URL of a fresh server (durable by default: fsync on), gone on the way out.

    As root the server runs as the ``postgres`` user (it refuses to run as root). ``prefix``
    (``ip netns exec NS``) starts it inside a network namespace: its 127.0.0.1 is that namespace's.
    """
    bindir = server_bin()
    if bindir is None:
        raise PosswarmError("PostgreSQL server binaries are not installed (apt-get install postgresql)")
    user = "postgres" if os.geteuid() == 0 else None
    root = Path(tempfile.mkdtemp(prefix="posswarm-pg-"))
    os.chmod(root, 0o777)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    options = " ".join(f"-c {k}={v}" for k, v in {"listen_addresses": "127.0.0.1", **(settings or {})}.items())

    def run(*cmd: str) -> None:
        full = [*prefix, *(["runuser", "-u", user, "--"] if user else []), *cmd]
        done = subprocess.run(full, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise PosswarmError(f"postgresql {Path(cmd[0]).name}: {done.stderr.strip()[-300:]}")

    try:
        run(str(bindir / "initdb"), "-D", str(root / "data"), "-U", "posswarm", "--auth=trust", "-E", "UTF8")
        run(str(bindir / "pg_ctl"), "-D", str(root / "data"), "-l", str(root / "log"), "-w", "-t", "60", "start",
            "-o", f"-p {port} -k {root} {options}")
        try:
            yield f"postgresql://posswarm@127.0.0.1:{port}/postgres"
        finally:
            run(str(bindir / "pg_ctl"), "-D", str(root / "data"), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)
