"""A whole store (tracker, seeder, cache, device) runs with the units' kernel sandbox switched on: its system call filter
(@system-service less @privileged and @resources), no writable-and-executable memory, no new privileges.
systemd applies these to the real unit; here tests/contrib/sandboxed.py applies the same kernel features
without a running systemd."""

from __future__ import annotations

import shutil
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest
import trio

from tests.contrib.test_systemd_unit import UNITS, directives
from tools.lab import Lab, bin_path, write_image

LAUNCHER = Path(__file__).with_name("sandboxed.py")
pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                reason="systemd-analyze is not installed (it names the system call groups)")


@lru_cache
def _group(name: str) -> frozenset[str]:
    """Every system call in a systemd group (``@system-service``), its nested groups expanded."""
    out = subprocess.run(["systemd-analyze", "syscall-filter", name], capture_output=True, text=True, check=True)
    calls: set[str] = set()
    for line in out.stdout.splitlines()[1:]:
        entry = line.strip()
        if entry and not entry.startswith("#"):
            calls |= _group(entry) if entry.startswith("@") else {entry}
    return frozenset(calls)


def _allowed_by_the_node_unit(tmp_path: Path) -> Path:
    """The unit's SystemCallFilter= lines, applied as systemd does: an allow list, then ``~`` lines taken out."""
    allowed: set[str] = set()
    for value in directives((UNITS / "posswarm-node.service").read_text())["SystemCallFilter"]:
        deny = value.startswith("~")
        names = {call for word in value.lstrip("~").split()
                 for call in (_group(word) if word.startswith("@") else {word})}
        allowed = allowed - names if deny else allowed | names
    path = tmp_path / "syscalls.txt"
    path.write_text("\n".join(sorted(allowed)) + "\n")
    return path


def test_the_filter_really_refuses_what_the_unit_leaves_out(tmp_path):
    syscalls = _allowed_by_the_node_unit(tmp_path)
    assert "chown" not in syscalls.read_text().split() and "openat" in syscalls.read_text().split()
    target = tmp_path / "f"
    target.write_text("x")
    probe = ("import mmap, os, sys\n"
             "try:\n    os.chown(sys.argv[1], 0, 0)\nexcept PermissionError:\n    print('chown refused')\n"
             "try:\n    mmap.mmap(-1, 4096, prot=7)\nexcept OSError:\n    print('w+x refused')\n")
    done = subprocess.run([sys.executable, str(LAUNCHER), str(syscalls), sys.executable, "-c", probe, str(target)],
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.split("\n")[:2] == ["chown refused", "w+x refused"], done.stderr
    assert "sandboxed: mdwe=1 seccomp=2 no_new_privs=1" in done.stderr


def _sandboxed_scripts(tmp_path: Path, syscalls: Path) -> Path:
    """posswarm, posswarm-seeder and posswarm-tracker that start the real ones under the sandbox."""
    where = tmp_path / "sandboxed-bin"
    where.mkdir()
    for name in ("posswarm", "posswarm-seeder", "posswarm-tracker"):
        script = where / name
        script.write_text(f'#!/bin/sh\nexec {sys.executable} {LAUNCHER} {syscalls} {bin_path(name)} "$@"\n')
        script.chmod(0o755)
    return where


def test_the_three_services_share_one_system_call_filter():
    filters = {name: directives((UNITS / name).read_text())["SystemCallFilter"]
               for name in ("posswarm-node.service", "posswarm-seeder.service", "posswarm-tracker.service")}
    assert len({tuple(f) for f in filters.values()}) == 1, filters


async def test_a_store_installs_a_release_with_every_process_sandboxed(tmp_path, monkeypatch):
    syscalls = _allowed_by_the_node_unit(tmp_path)
    scripts = _sandboxed_scripts(tmp_path, syscalls)
    monkeypatch.setattr("tools.lab.bin_path", lambda name: str(scripts / name))  # the lab starts the wrappers
    lab = Lab(tmp_path, devices=1)
    image = write_image(tmp_path / "pos-image.img", 6)
    async with trio.open_nursery() as nursery:
        with trio.fail_after(90):
            await lab.start_central(nursery)
            await lab.start_node(nursery, lab.cache)
            # the hooks run inside the sandbox too: the health check forks and execs under the same filter
            await lab.start_node(nursery, lab.devices[0],
                                 extra={"install": {"health_check": "/bin/sh -c 'test -s image.bin'"}})
        await lab.publish(image, "1.0")
        with trio.fail_after(120):
            await lab.wait_installed("pos-image", "1.0")
        current = lab.devices[0].data_dir / "installed" / "pos-image" / "current" / "image.bin"
        assert current.read_bytes() == image.read_bytes()
        for name in ("tracker", "seeder", *(node.name for node in lab.nodes)):
            assert "sandboxed: mdwe=1 seccomp=2 no_new_privs=1" in (lab.logs / f"{name}.log").read_text(), name
        nursery.cancel_scope.cancel()
