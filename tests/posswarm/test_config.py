"""Node config: good files load, every bad key is named in one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import tomli_w

from posswarm import config
from posswarm.errors import PosswarmError


def _doc(tmp_path: Path, **changes) -> dict:
    pub = tmp_path / "root.json"
    pub.write_text("key")
    (tmp_path / "identity").mkdir(exist_ok=True)
    doc = {
        "node": {"id": "till-01", "role": "device", "store": "S042", "data_dir": str(tmp_path / "data"),
                 "address": "10.20.0.11", "lan_network": "10.20.0.0/16", "identity_dir": str(tmp_path / "identity")},
        "central": {"root": str(pub)},
    }
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        if value is None:
            doc[section].pop(key, None)
        else:
            doc.setdefault(section, {})[key] = value
    return doc


def test_a_good_config_loads_with_defaults(tmp_path):
    c = config.from_dict(_doc(tmp_path))
    assert (c.role, c.store, c.device_class, c.bt_port) == ("device", "S042", "pos", 0)
    assert c.data_dir == tmp_path / "data"


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"node__role": "router"}, "'node.role'"),
        ({"node__store": None}, "'node.store' is missing"),
        ({"node__address": "10.99.0.1"}, "outside 'node.lan_network'"),
        ({"node__address": "till.local"}, "'node.address'"),
        ({"node__bt_port": 70000}, "'node.bt_port'"),
        ({"node__bt_port": "6881"}, "'node.bt_port' must be a int"),
        ({"node__colour": "red"}, "unknown key 'node.colour'"),
        ({"node__role": "cache"}, "'central.catalog_url'"),
        ({"central__root": "/nonexistent/root.json"}, "'central.root'"),
        ({"node__identity_dir": None}, "'node.identity_dir' is missing"),
        ({"node__identity_dir": "/nonexistent/identity"}, "'node.identity_dir' '/nonexistent/identity' is not a directory"),
        ({"central__expiry_grace_s": -1}, "'central.expiry_grace_s'"),
        ({"central__tracker_url": "ftp://x"}, "'central.tracker_url'"),
        ({"central__tracker_url": "http://tracker:6969/announce/k1"},
         "'central.tracker_url' is 'http://tracker:6969/announce/<passkey>'; the tracker is reached over HTTPS only"),
        ({"node__role": "cache", "central__catalog_url": "http://central:8080"}, "central is reached over HTTPS only"),
        ({"central__tls_ca": "/nonexistent/ca.crt"}, "'central.tls_ca'"),
        ({"central__web_seed_ca": "/nonexistent/cdn.pem"}, "'central.web_seed_ca' /nonexistent/cdn.pem: cannot read it"),
        ({"central__web_seed_ca": __file__}, "'central.web_seed_ca' .*: not PEM certificates"),
        ({"metrics__token_file": "/nonexistent/operator.token"}, "'metrics.token_file'"),
        ({"install__slots": ["/dev/sda2"]}, "'install.slots' must name two different absolute paths"),
        ({"install__slots": ["/dev/sda2", "/dev/sda2"]}, "'install.slots' must name two different absolute paths"),
        ({"install__slots": ["/dev/sda2", "/dev/sda3"]}, "needs 'install.bootloader_env'"),
        ({"install__slots": ["/dev/sda2", "/dev/sda3"], "install__bootloader": "lilo"}, "'install.bootloader' is 'lilo'"),
        ({"install__slots": ["/dev/sda2", "/dev/sda3"], "install__bootloader": "command"},
         "needs 'install.env_get_command'"),
        ({"install__window": ["daily 02:00-04:00 4000"]}, "'install.window': 'daily 02:00-04:00 4000' is not a window"),
        ({"wan__schedule": ["daily 02:00-04:00"]}, "'wan.schedule': 'daily 02:00-04:00' is not a window"),
    ],
)
def test_bad_keys_are_named(tmp_path, changes, named):
    with pytest.raises(PosswarmError, match=named.replace("(", r"\(").replace(")", r"\)")):
        config.from_dict(_doc(tmp_path, **changes))


def test_a_till_with_boot_slots_and_an_install_window_loads(tmp_path):
    c = config.from_dict(_doc(tmp_path, install__slots=["/dev/disk/by-partlabel/pos_a", "/dev/disk/by-partlabel/pos_b"],
                              install__bootloader="uboot", install__bootloader_env="/etc/fw_env.config",
                              install__window=["daily 02:00-04:00"]))
    assert c.slots == ("/dev/disk/by-partlabel/pos_a", "/dev/disk/by-partlabel/pos_b")
    assert (c.bootloader, c.boot_cmdline, c.install_window) == ("uboot", "/proc/cmdline", ("daily 02:00-04:00",))


def test_check_config_command_gives_one_line_and_no_traceback(tmp_path):
    path = tmp_path / "node.toml"
    path.write_text(tomli_w.dumps(_doc(tmp_path, node__role="router")))
    posswarm = str(Path(sys.executable).with_name("posswarm"))
    bad = subprocess.run([posswarm, "node", "--config", str(path), "--check-config"], capture_output=True, text=True)
    assert bad.returncode == 1
    assert bad.stderr.count("\n") == 1 and "node.role" in bad.stderr and "Traceback" not in bad.stderr
    path.write_text(tomli_w.dumps(_doc(tmp_path)))
    good = subprocess.run([posswarm, "node", "--config", str(path), "--check-config"], capture_output=True, text=True)
    assert good.returncode == 0, good.stderr
    path.write_text("[node\nrole=")
    broken = subprocess.run([posswarm, "node", "--config", str(path), "--check-config"], capture_output=True, text=True)
    assert broken.returncode == 1 and "not valid TOML" in broken.stderr


def test_every_key_is_documented():
    doc = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text()
    missing = [key for key in config.KEYS if f"`{key}`" not in doc]
    assert not missing, f"docs/configuration.md lacks {missing}"


def test_wan_caps_in_kbit_become_bytes_per_second():
    assert config.kbps_to_bytes_per_s(0) == 0  # no cap stays no cap
    assert config.kbps_to_bytes_per_s(8) == 1000
    assert config.kbps_to_bytes_per_s(16_000) == 2_000_000  # a 16 Mbit/s store line
