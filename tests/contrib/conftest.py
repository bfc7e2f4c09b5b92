"""`make deb` for tests/contrib/test_deb.py, started when the suite is collected so that it builds while other tests run."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEB_TESTS = Path(__file__).with_name("test_deb.py")
_build: dict = {}


def _skipped(item) -> bool:
    return any(isinstance(mark.args[0], bool) and mark.args[0] for mark in item.iter_markers("skipif") if mark.args)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    # The build takes ~25 s of CPU but two minutes and more of wall time, mostly waiting on package indexes and
    # the disk: at the head of the suite it was the slowest test. Started here, with the .deb tests moved last,
    # that wait overlaps the rest of the suite.
    deb = [item for item in items if item.path == DEB_TESTS]
    if not deb or config.option.collectonly or all(_skipped(item) for item in deb):
        return
    items[:] = [item for item in items if item.path != DEB_TESTS] + deb
    out = Path(tempfile.mkdtemp(prefix="posswarm-test-deb-"))
    log = open(out / "make-deb.log", "wb")
    _build.update(out=out, log=log, process=subprocess.Popen(
        ["make", "-C", str(ROOT), "deb", f"DEB_OUT={out}"], stdin=subprocess.DEVNULL, stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True))


@pytest.fixture(scope="session")
def package() -> Path:
    """The .deb that `make deb` built (waited for here); a failed build fails the test with the end of its log."""
    if not _build:
        pytest.fail("make deb was not started: tests/contrib/conftest.py starts it when it collects test_deb.py")
    returncode = _build["process"].wait()
    log = (_build["out"] / "make-deb.log").read_text(errors="replace")
    assert returncode == 0, f"make deb failed (exit {returncode}):\n{log[-3000:]}"
    (deb,) = _build["out"].glob("posswarm_*.deb")
    return deb


def pytest_unconfigure(config):
    if not _build:
        return
    process = _build.pop("process")
    if process.poll() is None:  # the session ended (interrupted, -x) before a test waited for the build
        os.killpg(process.pid, signal.SIGTERM)  # make, build-deb and its pip: build-deb's trap removes its stage
        process.wait(timeout=30)
    _build.pop("log").close()
    shutil.rmtree(_build.pop("out"), ignore_errors=True)
