"""The boot unit is valid systemd and runs the node with a checked config, hardened."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).parents[2] / "contrib" / "systemd" / "posswarm-node.service"


def test_unit_is_hardened_and_restarts():
    text = UNIT.read_text()
    for line in ("User=posswarm", "ProtectSystem=strict", "StateDirectory=posswarm", "Restart=on-failure",
                 "NoNewPrivileges=yes", "--check-config"):
        assert line in text


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_accepts_the_unit(tmp_path):
    posswarm = Path(sys.executable).with_name("posswarm")
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace("/opt/posswarm/venv/bin/posswarm", str(posswarm)))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    complaints = [line for line in (result.stdout + result.stderr).splitlines() if UNIT.name in line]
    assert result.returncode == 0 and not complaints, complaints
