"""`make deb` builds the package; it installs with dpkg into a clean root of its own, runs, checks its units, and purges.

The build itself (fixture ``package``) is started by tests/contrib/conftest.py when the suite is collected."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(t) for t in ("dpkg-deb", "unshare", "chroot", "systemd-analyze")),
    reason="installing a .deb needs root (a mount namespace, an overlay over / and chroot) and dpkg-deb, "
           "unshare, systemd-analyze; CI runs as root",
)

# Runs as root inside the new root: everything it writes lands in the overlay's upper layer, never on the host.
INSTALL = r"""
set -eu
export PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8
mount -t proc proc /proc
test ! -e /opt/posswarm && test ! -e /etc/posswarm && ! getent passwd posswarm >/dev/null  # a clean root
dpkg -i /tmp/pkg/posswarm.deb
getent passwd posswarm | grep -q ':/usr/sbin/nologin$'
stat -c '%U %a' /etc/posswarm/tracker.toml | grep -qx 'root 600'
stat -c '%U %a' /etc/posswarm/operator.token | grep -qx 'root 600'
test "$(wc -c < /etc/posswarm/operator.token)" -ge 23  # a token of 22 characters at least, and its newline
for tool in posswarm posswarm-seeder posswarm-tracker posswarm-stats; do "$tool" --help >/dev/null; done
echo "default config: $(posswarm node --config /etc/posswarm/node.toml --check-config 2>&1 || true)"
posswarm-seeder keys init --keys /tmp/central-keys --releases /tmp/central-releases >/dev/null
cp /tmp/central-keys/root.json /etc/posswarm/root.json
posswarm-seeder enroll "$(hostname)" --store S0000 --role device --class pos --keys /tmp/central-keys \
    --out /etc/posswarm/identity >/dev/null
posswarm node --config /etc/posswarm/node.toml --check-config
cd /lib/systemd/system && systemd-analyze verify posswarm-node.service posswarm-seeder.service \
    posswarm-tracker.service posswarm-activate.service posswarm-activate.path
rm -r /etc/posswarm/root.json /etc/posswarm/identity
dpkg --purge posswarm
test ! -e /opt/posswarm && test ! -e /etc/posswarm && test ! -e /lib/systemd/system/posswarm-node.service
test ! -e /usr/bin/posswarm
echo purged
"""


@needs_root
def test_make_deb_names_the_version_and_architecture(package):
    version = next(line.split('"')[1] for line in (ROOT / "pyproject.toml").read_text().splitlines()
                   if line.startswith("version = "))
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, check=True).stdout.strip()
    assert package.name == f"posswarm_{version}_{arch}.deb"
    fields = subprocess.run(["dpkg-deb", "--field", str(package)], capture_output=True, text=True, check=True).stdout
    assert f"Version: {version}" in fields and "Depends: python3 (>= 3.11)" in fields
    listing = subprocess.run(["dpkg-deb", "--contents", str(package)], capture_output=True, text=True, check=True).stdout
    for path in ("./opt/posswarm/venv/bin/posswarm", "./lib/systemd/system/posswarm-node.service",
                 "./etc/posswarm/node.toml", "./opt/posswarm/docs/deployment.md"):
        assert path in listing


@needs_root
def test_the_venv_names_where_it_is_installed_not_where_it_was_built(package, tmp_path):
    subprocess.run(["dpkg-deb", "--extract", str(package), str(tmp_path)], check=True)
    venv = tmp_path / "opt" / "posswarm" / "venv"
    assert (venv / "bin" / "posswarm").read_text().splitlines()[0] == "#!/opt/posswarm/venv/bin/python3"
    assert os.readlink(venv / "bin" / "python3") == "/usr/bin/python3"  # Debian's python, not the builder's
    compiled = next((venv / "lib").glob("python3.11/site-packages/posswarm/__pycache__/node.*.pyc")).read_bytes()
    assert b"/opt/posswarm/venv/lib/python3.11/site-packages/posswarm/node.py" in compiled
    assert not [p for p in (venv / "bin").iterdir() if p.is_file() and b"posswarm-deb." in p.read_bytes()]


@needs_root
def test_package_installs_runs_and_purges_in_a_clean_root(package, tmp_path):
    layers = tmp_path / "layers"
    layers.mkdir()
    script = (
        f"set -e; mount -t tmpfs tmpfs {layers}; mkdir {layers}/upper {layers}/work {layers}/root; "
        f"mount -t overlay overlay -o lowerdir=/,upperdir={layers}/upper,workdir={layers}/work {layers}/root; "
        f"mkdir -p {layers}/root/tmp/pkg; cp {package} {layers}/root/tmp/pkg/posswarm.deb; "
        f'exec chroot {layers}/root /bin/sh -c "$INSTALL"'
    )
    run = subprocess.run(["unshare", "--mount", "--pid", "--fork", "--propagation", "private", "sh", "-c", script],
                         env={"INSTALL": INSTALL, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    # The shipped node.toml is a template: its check names the one file a store must add, in one line.
    assert ("default config: posswarm: /etc/posswarm/node.toml: 'central.root' /etc/posswarm/root.json does not "
            "exist (copy central's root.json there)") in run.stdout
    assert "ok: /etc/posswarm/node.toml (device" in run.stdout and run.stdout.rstrip().endswith("purged")
    assert not Path("/opt/posswarm").exists()  # nothing reached the host
