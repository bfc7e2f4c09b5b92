"""Run the operator's hooks against a freshly switched release (post-install, privileged, health check): a clean
environment, their own process group killed whole on timeout, and only the tail of what they print kept."""

from __future__ import annotations

import os
import selectors
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

#: The only PATH a hook sees: the node's own PATH is not the operator's to rely on (and may be a venv's).
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: At most this many bytes of a hook's stdout+stderr are kept (the last ones): a hook printing 1 GB costs nothing.
OUTPUT_LIMIT = 64 * 1024
#: After SIGTERM, a hook's process group has this long to go before SIGKILL.
KILL_GRACE_S = 2.0
_READ_SIZE = 64 * 1024
_LAST_LINE_CHARS = 200


@dataclass(frozen=True)
class HookRun:
    """How one hook run ended: its exit status (None when it timed out or could not start) and its output tail."""

    returncode: int | None
    output: bytes
    duration_s: float
    timed_out: bool = False
    start_error: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def last_line(self) -> str:
        lines = self.output.decode(errors="replace").strip().splitlines()
        return lines[-1][:_LAST_LINE_CHARS] if lines else ""


def environment(*, name: str, version: str, path: Path, kind: str) -> dict[str, str]:
    """Everything a hook's environment holds (docs/configuration.md lists it); nothing of the node's own."""
    return {"PATH": SAFE_PATH, "LANG": "C.UTF-8", "POSSWARM_RELEASE": name, "POSSWARM_VERSION": version,
            "POSSWARM_KIND": kind, "POSSWARM_PATH": str(path)}


def run(command: str, *, env: dict[str, str], cwd: Path, timeout_s: float) -> HookRun:
    """Run ``command`` (split like a shell would, not run by one) in a new session; blocking: call it from a thread.

    When it times out its whole process group gets SIGTERM, then SIGKILL after KILL_GRACE_S; whatever it left
    running in its group when it exited is stopped the same way (so nothing it forked holds the output pipe).
    """
    started = time.monotonic()
    try:
        proc = subprocess.Popen(shlex.split(command), env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return HookRun(None, b"", time.monotonic() - started, start_error=reason)
    deadline = started + timeout_s
    tail = bytearray()
    timed_out = False
    assert proc.stdout is not None
    with proc.stdout, selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        fd = proc.stdout.fileno()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            if not selector.select(timeout=min(left, 0.2)):
                if proc.poll() is not None:
                    break  # it exited but something it forked still holds the pipe: stopped below
                continue
            data = os.read(fd, _READ_SIZE)
            if not data:
                break
            tail += data
            if len(tail) > OUTPUT_LIMIT:
                del tail[:-OUTPUT_LIMIT]
        if not timed_out:
            try:  # the pipe closes a moment before the leader exits: let it, so its exit status is its own
                proc.wait(timeout=max(deadline - time.monotonic(), 0.0))
            except subprocess.TimeoutExpired:
                timed_out = True
        _stop_group(proc)
        returncode = proc.wait()
    return HookRun(None if timed_out else returncode, bytes(tail), time.monotonic() - started, timed_out=timed_out)


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the hook's process group, SIGKILL whatever is left after the grace; quiet if it is already gone."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        end = time.monotonic() + KILL_GRACE_S
        while time.monotonic() < end and _group_alive(proc):
            time.sleep(0.02)


def _group_alive(proc: subprocess.Popen) -> bool:
    proc.poll()  # reap the leader (our child) through Popen, or killpg(.., 0) goes on seeing its zombie
    try:
        os.killpg(proc.pid, 0)
    except ProcessLookupError:
        return False
    return True


def explain(run_: HookRun, *, what: str, command: str, timeout_s: float) -> str | None:
    """None for a hook that exited 0, else why it failed in one line (quoting the last line it printed)."""
    if run_.start_error:
        return f"{what} {command!r} could not start ({run_.start_error}); fix its install.* setting"
    said = f": {run_.last_line()}" if run_.last_line() else ""
    if run_.timed_out:
        return f"{what} {command!r} did not finish within {timeout_s:g} s{said}"
    if run_.returncode != 0:
        return f"{what} {command!r} exited with {run_.returncode}{said}"
    return None


def check(command: str, *, name: str, version: str, path: Path, timeout_s: float, kind: str = "",
          what: str = "health check") -> str | None:
    """None when ``command`` exits 0 within ``timeout_s``; otherwise why it failed, in one line.

    The command gets the environment of ``environment`` and the installed payload as its working directory.
    Blocking: call it from a thread.
    """
    done = run(command, env=environment(name=name, version=version, path=path, kind=kind), cwd=path,
               timeout_s=timeout_s)
    return explain(done, what=what, command=command, timeout_s=timeout_s)
