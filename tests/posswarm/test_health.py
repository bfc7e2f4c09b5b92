"""Hooks run in a clean environment, in their own process group killed whole on timeout, with bounded output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from posswarm import health

DOCS = Path(__file__).parents[2] / "docs" / "configuration.md"


def _env(tmp_path: Path) -> dict[str, str]:
    return health.environment(name="pos-os", version="2026.11", path=tmp_path, kind="image")


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")  # dead, waiting for its (re)parent to reap it


def test_a_timed_out_hook_takes_its_whole_process_group_with_it(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    hook = tmp_path / "hook.sh"
    # the grandchild ignores SIGTERM and outlives the hook's own shell: only SIGKILL to the group ends it
    hook.write_text(f'#!/bin/sh\n(trap "" TERM; exec sleep 1000) &\necho $! > {pid_file}\necho started\nsleep 1000\n')
    hook.chmod(0o755)
    done = health.run(str(hook), env=_env(tmp_path), cwd=tmp_path, timeout_s=1.0)
    assert done.timed_out and done.returncode is None
    grandchild = int(pid_file.read_text())
    end = time.monotonic() + 5  # PID 1 reaps the orphan's zombie in its own time
    while not _gone(grandchild) and time.monotonic() < end:
        time.sleep(0.05)
    assert _gone(grandchild), f"grandchild {grandchild} survived the hook's timeout"
    reason = health.explain(done, what="post-install hook", command=str(hook), timeout_s=1.0)
    assert reason == f"post-install hook {str(hook)!r} did not finish within 1 s: started"


def test_a_hook_that_exits_leaves_nothing_running_in_its_group(tmp_path):
    pid_file = tmp_path / "daemon.pid"
    hook = tmp_path / "hook.sh"
    hook.write_text(f"#!/bin/sh\nsleep 1000 &\necho $! > {pid_file}\nexit 0\n")
    hook.chmod(0o755)
    started = time.monotonic()
    done = health.run(str(hook), env=_env(tmp_path), cwd=tmp_path, timeout_s=30.0)
    assert done.ok and time.monotonic() - started < 10  # the background sleep holding stdout did not stall it
    leftover = int(pid_file.read_text())
    end = time.monotonic() + 5
    while not _gone(leftover) and time.monotonic() < end:
        time.sleep(0.05)
    assert _gone(leftover)


def test_a_hook_printing_200_mb_costs_the_node_only_the_tail(tmp_path):
    # in a process of its own, so its peak memory is the hook runner's alone; VmHWM, not ru_maxrss, which
    # Linux carries over exec from the process that forked it (the test runner, hundreds of MB by then)
    probe = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from posswarm import health\n"
        "cmd = 'sh -c \"head -c 209715200 /dev/zero | tr \\\\\\\\0 x; echo; echo disk full; exit 3\"'\n"
        "p = Path(sys.argv[1])\n"
        "done = health.run(cmd, env=health.environment(name='a', version='1', path=p, kind='image'), cwd=p,"
        " timeout_s=120)\n"
        "print(json.dumps({'rc': done.returncode, 'kept': len(done.output), 'last': done.last_line(),"
        " 'maxrss_kib': int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]),"
        " 'why': health.explain(done, what='hook', command='x', timeout_s=120)}))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True, timeout=180,
                         check=True)
    seen = json.loads(out.stdout)
    assert seen["rc"] == 3
    assert seen["kept"] <= health.OUTPUT_LIMIT
    assert seen["last"] == "disk full" and seen["why"] == "hook 'x' exited with 3: disk full"
    assert seen["maxrss_kib"] < 100 * 1024, f"hook runner peaked at {seen['maxrss_kib']} KiB for 200 MB of output"


def test_a_hook_sees_only_the_documented_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("POSSWARM_TEST_SECRET", "hunter2")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-for-hooks")
    done = health.run("env -0", env=_env(tmp_path), cwd=tmp_path, timeout_s=30.0)
    assert done.ok
    seen = dict(item.split("=", 1) for item in done.output.decode().split("\0") if item)
    assert seen == {"PATH": health.SAFE_PATH, "LANG": "C.UTF-8", "POSSWARM_RELEASE": "pos-os",
                    "POSSWARM_VERSION": "2026.11", "POSSWARM_KIND": "image", "POSSWARM_PATH": str(tmp_path)}
    assert "hunter2" not in done.output.decode()
    documented = DOCS.read_text()
    for name in seen:
        assert f"`{name}`" in documented, f"{name} is not documented in docs/configuration.md"


def test_check_names_a_hook_that_cannot_start_and_one_that_fails(tmp_path):
    missing = health.check(str(tmp_path / "nope"), name="a", version="1", path=tmp_path, timeout_s=5)
    assert missing == f"health check {str(tmp_path / 'nope')!r} could not start (No such file or directory); " \
                      "fix its install.* setting"
    failed = health.check("sh -c 'echo first; echo >&2 port 8080 closed; exit 7'", name="a", version="1",
                          path=tmp_path, timeout_s=5)
    assert failed == "health check \"sh -c 'echo first; echo >&2 port 8080 closed; exit 7'\" exited with 7: " \
                     "port 8080 closed"
    assert health.check("true", name="a", version="1", path=tmp_path, timeout_s=5) is None
    assert os.environ.get("POSSWARM_RELEASE") is None
