"""Run the operator's hooks against a freshly switched release: post-install (e.g. load an OCI app into
the container runtime), then the health check."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path


def check(command: str, *, name: str, version: str, path: Path, timeout_s: float, kind: str = "",
          what: str = "health check") -> str | None:
    """None when ``command`` exits 0 within ``timeout_s``; otherwise why it failed, in one line.

    The command gets POSSWARM_RELEASE, POSSWARM_VERSION, POSSWARM_KIND (image, app, oci) and
    POSSWARM_PATH (the installed payload, also its working directory). Blocking: call it from a thread.
    """
    env = dict(os.environ, POSSWARM_RELEASE=name, POSSWARM_VERSION=version, POSSWARM_PATH=str(path),
               POSSWARM_KIND=kind)
    try:
        done = subprocess.run(shlex.split(command), env=env, cwd=path, capture_output=True, timeout=timeout_s,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return f"{what} {command!r} did not finish within {timeout_s:g} s"
    except OSError as exc:
        return f"{what} {command!r} could not start ({exc.strerror}); fix its install.* setting"
    if done.returncode != 0:
        last = (done.stderr or done.stdout).decode(errors="replace").strip().splitlines()
        said = f": {last[-1][:200]}" if last else ""
        return f"{what} {command!r} exited with {done.returncode}{said}"
    return None
