"""The systemd units are valid, sandboxed within their exposure targets, and run what they say they run."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import tomli_w

UNITS = Path(__file__).parents[2] / "contrib" / "systemd"
BIN = Path(sys.executable).parent
#: `systemd-analyze security --offline=true` exposure each service must stay at or under (0 = locked down, 10 = none).
EXPOSURE = {"posswarm-node.service": 1.5, "posswarm-seeder.service": 2.5, "posswarm-tracker.service": 2.5}
ALL = sorted(p.name for p in UNITS.glob("posswarm-*.*") if p.is_file())
needs_systemd_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                           reason="systemd-analyze is not installed")


def directives(text: str) -> dict[str, list[str]]:
    """Key -> every value it is given, backslash-continued lines joined (enough of the unit syntax for tests)."""
    found: dict[str, list[str]] = {}
    for line in text.replace("\\\n", " ").splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(" ".join(value.split()))
    return found


def _installed_copy(tmp_path: Path) -> Path:
    """The units (and the node's drop-in) as installed here: the venv's console scripts for /opt/posswarm/venv."""
    for path in UNITS.rglob("*"):
        if path.is_file():
            target = tmp_path / path.relative_to(UNITS)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(path.read_text().replace("/opt/posswarm/venv/bin/", f"{BIN}/"))
    return tmp_path


def test_every_process_has_a_unit():
    assert set(ALL) == {"posswarm-node.service", "posswarm-seeder.service", "posswarm-tracker.service",
                        "posswarm-activate.service", "posswarm-activate.path"}


@pytest.mark.parametrize("name", sorted(EXPOSURE))
def test_each_service_runs_sandboxed_and_keeps_its_files_to_itself(name):
    unit = directives((UNITS / name).read_text())
    assert unit.get("DynamicUser") == ["yes"] or unit["User"] == ["posswarm"]
    for key, value in (("UMask", "0077"), ("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"),
                       ("ProtectProc", "invisible"), ("ProcSubset", "pid"), ("CapabilityBoundingSet", ""),
                       ("MemoryDenyWriteExecute", "yes"), ("LockPersonality", "yes"), ("Restart", "on-failure")):
        assert unit[key] == [value], (name, key)
    assert unit["SystemCallFilter"][0] == "@system-service"
    for key in ("LimitNOFILE", "MemoryMax", "TasksMax"):
        assert unit[key], (name, key)
    if "StateDirectory" in unit:
        assert unit["StateDirectoryMode"] == ["0700"]


def test_the_node_talks_only_to_allowed_addresses_and_may_check_its_config_first():
    unit = directives((UNITS / "posswarm-node.service").read_text())
    assert unit["IPAddressDeny"] == ["any"]
    assert "224.0.0.251" in unit["IPAddressAllow"][0].split() and "localhost" in unit["IPAddressAllow"][0].split()
    assert unit["ExecStartPre"][0].endswith("--check-config")
    assert unit["RestrictAddressFamilies"] == ["AF_INET AF_INET6 AF_UNIX AF_NETLINK"]
    drop_in = directives((UNITS / "posswarm-node.service.d" / "addresses.conf").read_text())
    assert len(drop_in["IPAddressAllow"]) == 2  # the store LAN, central: both placeholders to edit


def test_the_activation_path_starts_the_root_oneshot_on_a_request():
    path = directives((UNITS / "posswarm-activate.path").read_text())
    assert path["PathExistsGlob"] == ["/var/lib/posswarm/activate/*.request"]
    assert path["Unit"] == ["posswarm-activate.service"]
    service = directives((UNITS / "posswarm-activate.service").read_text())
    assert service["Type"] == ["oneshot"] and "User" not in service
    assert service["ExecStart"] == ["/opt/posswarm/venv/bin/posswarm activate-pending --config /etc/posswarm/node.toml "
                                    "--work-dir /var/lib/posswarm-activate"]
    assert service["StateDirectoryMode"] == ["0700"]


@needs_systemd_analyze
def test_systemd_accepts_every_unit(tmp_path):
    here = _installed_copy(tmp_path)
    result = subprocess.run(["systemd-analyze", "verify", *(str(here / name) for name in ALL)],
                            capture_output=True, text=True)
    complaints = [line for line in (result.stdout + result.stderr).splitlines()
                  if any(name in line for name in ALL)]
    assert result.returncode == 0 and not complaints, complaints


@needs_systemd_analyze
@pytest.mark.parametrize(("name", "target"), sorted(EXPOSURE.items()))
def test_exposure_is_at_or_under_its_target(tmp_path, name, target):
    here = _installed_copy(tmp_path)
    result = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager", str(here / name)],
                            capture_output=True, text=True)
    found = re.search(rf"Overall exposure level for {re.escape(name)}: (\d+\.\d+)", result.stdout + result.stderr)
    assert found, result.stdout + result.stderr
    assert float(found.group(1)) <= target, f"{name}: exposure {found.group(1)} > {target}"


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) is not installed")
def test_the_units_config_check_passes_as_an_unprivileged_user_without_capabilities():
    """ExecStartPre as systemd would start it: an empty environment, UMask=0077, no new privileges, an empty
    capability bounding set, not root (nobody standing in for the posswarm user)."""
    line = directives((UNITS / "posswarm-node.service").read_text())["ExecStartPre"][0]
    # under /tmp, not pytest's root-only tmp_path: the user it runs as must be able to read the config
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        etc = Path(tmp)
        etc.chmod(0o755)
        (etc / "root.json").write_text("{}")
        (etc / "identity").mkdir()
        (etc / "node.toml").write_text(tomli_w.dumps({
            "node": {"id": "S042-till-03", "role": "device", "store": "S042", "data_dir": "/var/lib/posswarm",
                     "address": "10.20.0.13", "lan_network": "10.20.0.0/16", "identity_dir": str(etc / "identity")},
            "central": {"root": str(etc / "root.json")},
            "install": {"privileged_hook": "/usr/local/sbin/apply-image"},
        }))
        for path in etc.iterdir():
            path.chmod(0o644)
        argv = line.replace("/opt/posswarm/venv/bin/posswarm", str(BIN / "posswarm")).replace(
            "/etc/posswarm/node.toml", str(etc / "node.toml")).split()
        sandbox = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--no-new-privs",
                   "--inh-caps=-all", "--bounding-set=-all"]
        if os.geteuid() != 0:
            sandbox = ["setpriv", "--no-new-privs", "--inh-caps=-all"]
        done = subprocess.run(["sh", "-c", 'umask 0077 && exec "$@"', "sh", *sandbox, *argv], env={},
                              capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"ok: {etc / 'node.toml'} (device S042-till-03 of store S042)"
