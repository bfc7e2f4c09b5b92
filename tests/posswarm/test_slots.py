"""Boot slots: the slot state in real bootloader environments (grub-editenv, fw_setenv), the slot writer on a real
loop device, trial boot → confirm / reject / fall back, and a power cut at any moment of the slot write."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from posswarm import install
from posswarm.config import NodeConfig
from posswarm.datadir import DataDir
from posswarm.errors import PosswarmError
from posswarm.keys import generate_keypair, load_private_key
from posswarm.slots import state, writer
from posswarm.slots.bootloader import Bootloader
from posswarm.slots.device import BootSlots
from seeder.publish import publish
from tools.lab import change_image, write_image
from tools.slot_boot import power_on

NAME = "pos-os"
needs_grub = pytest.mark.skipif(shutil.which("grub-editenv") is None, reason="grub-editenv (grub-common) not installed")
needs_uboot = pytest.mark.skipif(shutil.which("fw_setenv") is None or shutil.which("mkenvimage") is None,
                                 reason="fw_setenv (libubootenv-tool) and mkenvimage (u-boot-tools) not installed")


def env_of(**values) -> state.BootEnv:
    return state.parse_env({f"posswarm_{k}": v for k, v in values.items()}, source="test env")


# ---- the pure core -------------------------------------------------------------------------------------------


def apply(env: state.BootEnv, updates: dict[str, str]) -> state.BootEnv:
    raw = {f"posswarm_{k}": v for k, v in (("primary", env.primary), ("trial", env.trial), ("tries", str(env.tries)),
                                           ("outcome", env.outcome), ("reason", env.reason))}
    for s in env.slots.values():
        raw |= {f"posswarm_{s.id}_name": s.name, f"posswarm_{s.id}_version": s.version, f"posswarm_{s.id}_state": s.state}
    return state.parse_env(raw | updates, source="test env")


def test_update_trial_boot_confirm_then_the_new_slot_is_primary():
    env = env_of(a_name=NAME, a_version="1", a_state="good")
    env = apply(env, state.start_writing(env, "b", NAME, "2"))
    assert state.choose_boot(env)[0] == "a", "a slot being written must never boot"
    assert state.running(env, "a", NAME) == ("1", None, None)
    env = apply(env, state.arm_trial("b"))
    assert state.running(env, "a", NAME) == ("1", None, "2")
    slot, updates = state.choose_boot(env)
    env = apply(env, updates)
    assert (slot, env.tries) == ("b", 0)
    assert state.on_start(env, "b") == (state.TRIAL, {})
    env = apply(env, state.confirm("b"))
    assert (env.primary, env.trial, state.choose_boot(env)[0]) == ("b", "", "b")
    assert state.running(env, "b", NAME) == ("2", "1", None)
    assert state.describe(env, "b")["boot"] == state.CONFIRMED


def test_a_trial_that_never_confirms_falls_back_through_the_bootloaders_counter():
    env = env_of(a_name=NAME, a_version="1", a_state="good", b_name=NAME, b_version="2", b_state="written",
                 trial="b", tries="1")
    slot, updates = state.choose_boot(env)
    env = apply(env, updates)  # the trial boot crashes before the node confirms: power on again
    assert slot == "b"
    slot, updates = state.choose_boot(env)
    assert (slot, updates) == ("a", {})
    found, updates = state.on_start(env, "a")
    assert found == state.FELL_BACK and "never confirmed" in updates["posswarm_reason"]
    env = apply(env, updates)
    assert (env.trial, env.slots["b"].state, env.outcome) == ("", "bad", state.FELL_BACK)
    assert state.running(env, "a", NAME) == ("1", None, None)


def test_a_rejected_trial_leaves_the_old_slot_primary():
    env = env_of(a_name=NAME, a_version="1", a_state="good", b_name=NAME, b_version="2", b_state="written",
                 trial="b", tries="0")
    env = apply(env, state.reject("b", "health check exited with 3\n" + "x" * 500))
    assert (state.choose_boot(env)[0], env.slots["b"].state, env.outcome) == ("a", "bad", state.REJECTED)
    assert len(env.reason) <= state.MAX_REASON and "\n" not in env.reason


@pytest.mark.parametrize("raw, problem", [
    ({"posswarm_primary": "c"}, "posswarm_primary"),
    ({"posswarm_tries": "lots"}, "posswarm_tries"),
    ({"posswarm_a_state": "fine"}, "posswarm_a_state"),
    ({"posswarm_a_version": "1\x00"}, "posswarm_a_version"),
    ({"posswarm_reason": "x" * 5000}, "posswarm_reason"),
])
def test_a_hand_edited_environment_is_refused_in_one_line(raw, problem):
    with pytest.raises(PosswarmError, match=problem) as caught:
        state.parse_env(raw, source="grub environment /boot/grub/grubenv")
    assert "\n" not in str(caught.value)


def test_the_booted_slot_comes_from_the_kernel_command_line():
    assert state.booted_slot("BOOT_IMAGE=/vmlinuz ro posswarm.slot=b quiet", source="/proc/cmdline") == "b"
    for bad in ("ro quiet", "posswarm.slot=c"):
        with pytest.raises(PosswarmError, match="/proc/cmdline"):
            state.booted_slot(bad, source="/proc/cmdline")


# ---- real bootloader environments ----------------------------------------------------------------------------


def grub(tmp_path: Path) -> Bootloader:
    return Bootloader("grub", env_file=str(tmp_path / "grubenv"))


def uboot(tmp_path: Path) -> Bootloader:
    defaults = tmp_path / "uboot-defaults.txt"
    defaults.write_text("bootdelay=0\nbootcmd=run posswarm_boot\n")
    image = tmp_path / "uboot-env.bin"
    subprocess.run(["mkenvimage", "-s", "0x4000", "-o", str(image), str(defaults)], check=True)
    config = tmp_path / "fw_env.config"
    config.write_text(f"{image} 0x0 0x4000\n")
    return Bootloader("uboot", env_file=str(config))


@pytest.mark.parametrize("make", [pytest.param(grub, marks=needs_grub), pytest.param(uboot, marks=needs_uboot)])
def test_the_real_tools_keep_and_clear_what_the_node_writes(tmp_path, make):
    boot = make(tmp_path)
    boot.write({"posswarm_a_name": NAME, "posswarm_a_reason": "health check said: no printer, no sale",
                "posswarm_trial": "b"})
    assert boot.read() == {"posswarm_a_name": NAME, "posswarm_a_reason": "health check said: no printer, no sale",
                           "posswarm_trial": "b"}
    boot.write({"posswarm_trial": ""})
    assert boot.read().get("posswarm_trial", "") == ""


def test_a_missing_tool_is_one_line_naming_the_environment(tmp_path):
    boot = Bootloader("command", get_command=str(tmp_path / "no-such-tool"), set_command="true")
    with pytest.raises(PosswarmError, match="bootloader environment") as caught:
        boot.read()
    assert "\n" not in str(caught.value)


# ---- a till with two slots on loop devices --------------------------------------------------------------------


@pytest.fixture
def release(tmp_path):
    private, _ = generate_keypair(tmp_path / "keys")
    key = load_private_key(private)

    def make(version: str, image: Path):
        folder = tmp_path / "payloads" / version
        folder.mkdir(parents=True)
        shutil.copy(image, folder / "pos-os.img")
        m = publish(folder / "pos-os.img", name=NAME, version=version, private_key=key, out=tmp_path / "releases")
        return m, tmp_path / "releases" / NAME / version

    return make


def loop_devices(tmp_path: Path, mib: int) -> list[str]:
    if os.geteuid() != 0 or shutil.which("losetup") is None:
        pytest.skip("loop devices need root and losetup")
    devices = []
    for slot in state.SLOT_IDS:
        backing = tmp_path / f"slot-{slot}.img"
        with open(backing, "wb") as f:
            f.truncate(mib << 20)
        done = subprocess.run(["losetup", "--find", "--show", str(backing)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"losetup cannot attach a loop device here: {done.stderr.strip()}")
        devices.append(done.stdout.strip())
    return devices


@pytest.fixture(params=[pytest.param("grub", marks=needs_grub), pytest.param("uboot", marks=needs_uboot)])
def till(tmp_path, request):
    """A till: two loop-device slots, a grub or U-Boot environment, and the command line its last boot left."""
    devices = loop_devices(tmp_path, 6)
    env = grub(tmp_path) if request.param == "grub" else uboot(tmp_path)
    config = NodeConfig(role="device", store="S1", address="127.0.0.1", lan_network="127.0.0.0/8",
                        root=tmp_path / "root.json", data_dir=tmp_path / "data", slots=tuple(devices),
                        bootloader=env.kind, bootloader_env=env.env_file,
                        boot_cmdline=str(tmp_path / "cmdline"), health_timeout_s=10.0)
    DataDir(config.data_dir).create()
    yield config
    for device in devices:
        subprocess.run(["losetup", "-d", device], check=False)


def bootloader_of(config: NodeConfig) -> Bootloader:
    return Bootloader(config.bootloader, env_file=config.bootloader_env)


def boot(config: NodeConfig, **changes) -> BootSlots:
    """Power the till on, then start the node's slot part (what posswarm node does first)."""
    from dataclasses import replace

    config = replace(config, **changes)
    power_on(bootloader_of(config), Path(config.boot_cmdline))
    slots = BootSlots(config, DataDir(config.data_dir))
    slots.start()
    return slots


def test_update_into_the_other_slot_then_trial_boot_confirms_it(till, release, tmp_path):
    image = write_image(tmp_path / "one.img", 4, seed=1)
    m, directory = release("2026.11", image)
    slots = boot(till, health_check="true")
    assert slots.booted == "a" and not slots.holds(NAME)
    slots.install(m, directory)
    assert Path(till.slots[1]).read_bytes()[: m.total_size] == image.read_bytes()
    assert slots.installed(NAME, frozenset()).pending == "2026.11"

    slots = boot(till, health_check="true")  # the reboot
    assert slots.booted == "b"
    assert slots.status()["boot"] == state.CONFIRMED
    assert slots.installed(NAME, frozenset()).current == "2026.11"
    assert state.choose_boot(slots.env)[0] == "b", "a confirmed slot is the one booted from now on"


def test_an_image_streamed_into_the_slot_as_its_chunks_arrive_is_armed_only_once_whole(till, release, tmp_path):
    image = write_image(tmp_path / "one.img", 4, seed=5)
    m, directory = release("2026.12", image)
    slots = boot(till, health_check="true")
    staged = slots.begin(m)  # as the download starts: the slot is marked unbootable before its first byte
    assert slots.env.slots["b"].state == "writing" and not slots.env.trial
    refs = m.unique_chunks()[::-1]
    for ref in refs[: len(refs) // 2]:  # the torrent's order, half of it before the download ends
        assert staged.take(ref, directory) is None
    slots.install(m, directory, staged)  # the rest is written now, then read back and armed
    assert Path(till.slots[1]).read_bytes()[: m.total_size] == image.read_bytes()
    assert slots.installed(NAME, frozenset()).pending == "2026.12"


def test_a_slot_another_image_began_meanwhile_is_written_again_from_the_start(till, release, tmp_path):
    one, two = write_image(tmp_path / "one.img", 3, seed=1), write_image(tmp_path / "two.img", 3, seed=2)
    (m1, d1), (m2, d2) = release("2026.12", one), release("2027.01", two)
    slots = boot(till, health_check="true")
    staged = slots.begin(m1)
    for ref in m1.unique_chunks():
        staged.take(ref, d1)
    other = slots.begin(m2)  # a newer image took the slot and wrote some of itself before the first finished
    for ref in m2.unique_chunks()[:8]:
        assert other.take(ref, d2) is None
    other.close()
    slots.install(m1, d1, staged)
    assert Path(till.slots[1]).read_bytes()[: m1.total_size] == one.read_bytes()
    assert slots.installed(NAME, frozenset()).pending == "2026.12"


def test_a_trial_with_a_failing_health_check_goes_back_and_holds_the_version(till, release, tmp_path):
    one = write_image(tmp_path / "one.img", 3, seed=1)
    m1, d1 = release("1", one)
    slots = boot(till, health_check="true")
    slots.install(m1, d1)
    boot(till, health_check="true")  # 1 runs from slot b
    two = tmp_path / "two.img"
    change_image(one, two, percent=5)
    m2, d2 = release("2", two)
    slots = boot(till, health_check="true")
    slots.install(m2, d2)
    assert Path(till.slots[0]).read_bytes()[: m2.total_size] == two.read_bytes()

    script = tmp_path / "health.sh"
    script.write_text("#!/bin/sh\necho receipt printer not found\nexit 3\n")
    script.chmod(0o755)
    slots = boot(till, health_check=str(script))
    assert slots.booted == "a" and slots.status()["boot"] == state.REJECTED
    assert "receipt printer not found" in slots.status()["reason"]
    assert install.held_versions(DataDir(till.data_dir).installed(NAME)) == {"2"}

    slots = boot(till, health_check=str(script))  # the bootloader starts the old slot again
    assert slots.booted == "b"
    assert slots.installed(NAME, frozenset()).current == "1"


def test_a_trial_that_crashes_before_confirming_falls_back(till, release, tmp_path):
    m, directory = release("1", write_image(tmp_path / "one.img", 2, seed=3))
    boot(till).install(m, directory)
    power_on(bootloader_of(till), Path(till.boot_cmdline))  # the trial boot: the till hangs before it confirms
    slots = boot(till)
    assert slots.booted == "a" and slots.status()["boot"] == state.FELL_BACK
    assert "never confirmed" in slots.status()["reason"]
    assert install.held_versions(DataDir(till.data_dir).installed(NAME)) == {"1"}


_WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from posswarm.config import NodeConfig
    from posswarm.datadir import DataDir
    from posswarm.manifest import Manifest
    from posswarm.release import read_manifest
    from posswarm.keys import load_public_key
    from posswarm.slots.device import BootSlots
    config = NodeConfig(role="device", store="S1", address="127.0.0.1", lan_network="127.0.0.0/8",
                        root=Path("x"), data_dir=Path(sys.argv[1]), slots=(sys.argv[2], sys.argv[3]),
                        bootloader=sys.argv[8], bootloader_env=sys.argv[4], boot_cmdline=sys.argv[5])
    directory = Path(sys.argv[6])
    manifest = read_manifest(directory, load_public_key(Path(sys.argv[7])))
    slots = BootSlots(config, DataDir(config.data_dir))
    slots.start()
    print("writing", flush=True)
    slots.install(manifest, directory)
    print("armed", flush=True)
""")


def _until_no_tool_works_in(directory: Path) -> None:
    """The bootloader tool (grub-editenv, fw_setenv) runs in a process group of its own, so it outlives a
    SIGKILL of the writer: let it end before looking, as a real power cut would have ended it too."""
    deadline = time.monotonic() + 10
    while subprocess.run(["pgrep", "-f", str(directory)], capture_output=True).returncode == 0:
        assert time.monotonic() < deadline, f"a bootloader tool still runs on {directory}"
        time.sleep(0.01)


@pytest.mark.parametrize("moment_s", [0.0, 0.01, 0.03, 0.06, 0.1])
def test_a_power_cut_during_the_slot_write_leaves_the_old_slot_booting_and_the_next_start_writes_again(
        till, release, tmp_path, moment_s):
    old = write_image(tmp_path / "old.img", 5, seed=1)
    Path(till.slots[0]).write_bytes(old.read_bytes())  # the factory image in slot a
    m, directory = release("2", write_image(tmp_path / "new.img", 5, seed=2))
    power_on(bootloader_of(till), Path(till.boot_cmdline))
    public = tmp_path / "keys" / "central.pub"
    argv = [sys.executable, "-c", _WRITER, str(till.data_dir), *till.slots, till.bootloader_env, till.boot_cmdline,
            str(directory), str(public), till.bootloader]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "writing\n"
    time.sleep(moment_s)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _until_no_tool_works_in(tmp_path)
    env = state.parse_env(bootloader_of(till).read(), source="the environment")
    finished = env.trial == "b"  # the cut came after the trial was armed, which only a whole, checked slot is

    slots = boot(till)  # power back on
    assert Path(till.slots[0]).read_bytes()[: old.stat().st_size] == old.read_bytes()
    if finished:
        assert slots.booted == "b" and writer.read_back(Path(till.slots[1]), m.total_size) == m.payload_blake3
        return
    assert slots.booted == "a", "a half-written slot must never boot"
    assert slots.installed(NAME, frozenset()).current is None
    assert slots.installed(NAME, frozenset()).pending is None
    slots.install(m, directory)  # what the node's next start does: the release is not installed, so it installs
    assert slots.installed(NAME, frozenset()).pending == "2"
    assert writer.read_back(Path(till.slots[1]), m.total_size) == m.payload_blake3
    assert boot(till).booted == "b"
