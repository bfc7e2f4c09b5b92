"""Run the operator's post-install health check against a freshly switched release."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path


def check(command: str, *, name: str, version: str, path: Path, timeout_s: float) -> str | None:
    """None when ``command`` exits 0 within ``timeout_s``; otherwise why it failed, in one line.

    Blocking (a subprocess): call it from a worker thread.
    """
    env = dict(os.environ, POSSWARM_RELEASE=name, POSSWARM_VERSION=version, POSSWARM_PATH=str(path))
    try:
        done = subprocess.run(shlex.split(command), env=env, cwd=path, capture_output=True, timeout=timeout_s,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return f"health check {command!r} did not finish within {timeout_s:g} s"
    except OSError as exc:
        return f"health check {command!r} could not start ({exc.strerror}); fix install.health_check"
    if done.returncode != 0:
        last = (done.stderr or done.stdout).decode(errors="replace").strip().splitlines()
        said = f": {last[-1][:200]}" if last else ""
        return f"health check {command!r} exited with {done.returncode}{said}"
    return None
