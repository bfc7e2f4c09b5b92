"""The privileged activation path: the node asks through the spool, a real ``posswarm activate-pending`` process
(what posswarm-activate.path starts) checks the request against installed/, runs the hook and answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tomli_w
import trio

from posswarm import config, install, privileged
from posswarm.activation import activate_release
from posswarm.errors import PosswarmError
from posswarm.keys import load_private_key
from seeder.keys_cli import init_keys
from seeder.publish import publish

POSSWARM = Path(sys.executable).with_name("posswarm")


class Store:
    """One device's data directory (releases of till-app published straight into it), its config file."""

    def __init__(self, tmp_path: Path):
        keys = init_keys(tmp_path / "keys", tmp_path / "central-releases")
        self.root = keys.root
        self.key = load_private_key(keys.key("targets"))
        self.tmp = tmp_path
        self.data = tmp_path / "data"
        self.spool = privileged.spool_dir(self.data)
        self.work = tmp_path / "root-work"  # posswarm-activate.service's StateDirectory
        self.installed = self.data / "installed" / "till-app"
        self.payload = tmp_path / "app"
        self.payload.mkdir()
        (self.payload / "till.bin").write_bytes(os.urandom(300_000))

    def config(self, **install_keys) -> config.NodeConfig:
        identity = self.tmp / "identity"  # only checked by the node at start, which these tests do not run
        identity.mkdir(exist_ok=True)
        doc = {"node": {"id": "till-01", "role": "device", "store": "S042", "data_dir": str(self.data),
                        "address": "10.20.0.11", "lan_network": "10.20.0.0/16", "identity_dir": str(identity)},
               "central": {"root": str(self.root)}, "install": install_keys}
        path = self.tmp / "node.toml"
        path.write_text(tomli_w.dumps(doc))
        return config.load(path)

    def hook(self, body: str) -> str:
        script = self.tmp / "apply-image.sh"
        script.write_text(f"#!/bin/sh\n{body}\n")
        script.chmod(0o755)
        return str(script)

    def publish(self, version: str):
        return publish(self.payload, name="till-app", version=version, private_key=self.key, out=self.data / "releases")

    def activate(self, cfg: config.NodeConfig, version: str) -> str | None:
        return activate_release(cfg, self.publish(version), self.data / "releases" / "till-app" / version,
                                self.installed)

    async def path_unit(self, env: dict[str, str] | None = None) -> None:
        """What posswarm-activate.path does: once a request exists, start the root oneshot (a real process)."""
        with trio.fail_after(60):
            while not list(self.spool.glob("*.request")):
                await trio.sleep(0.05)
            await self.activate_pending(env)

    async def activate_pending(self, env: dict[str, str] | None = None) -> None:
        await trio.run_process([str(POSSWARM), "activate-pending", "--config", str(self.tmp / "node.toml"),
                                "--work-dir", str(self.work)], env=env, capture_stderr=True)


async def test_root_applies_the_release_the_node_switched_to(tmp_path):
    store = Store(tmp_path)
    seen = tmp_path / "seen.txt"
    copied = tmp_path / "copied.bin"
    cfg = store.config(privileged_hook=store.hook(f'env > {seen}\ncp till.bin {copied}\necho "flashed $POSSWARM_VERSION"'))
    problem = "not run"

    async def node():
        nonlocal problem
        problem = await trio.to_thread.run_sync(store.activate, cfg, "1.0")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(node)
        nursery.start_soon(store.path_unit, dict(os.environ, CENTRAL_DB_PASSWORD="hunter2"))
    assert problem is None
    assert install.current_version(store.installed) == "1.0"
    env = dict(line.split("=", 1) for line in seen.read_text().splitlines())
    assert (env["POSSWARM_RELEASE"], env["POSSWARM_VERSION"], env["POSSWARM_KIND"]) == ("till-app", "1.0", "app")
    # the hook ran on root's own copy, rebuilt from the signed release, and that copy is gone again
    assert Path(env["POSSWARM_PATH"]) == store.work / "till-app" / "1.0"
    assert copied.read_bytes() == (store.payload / "till.bin").read_bytes()
    assert list(store.work.iterdir()) == []
    assert "CENTRAL_DB_PASSWORD" not in env  # root's own environment stays root's
    assert list(store.spool.iterdir()) == []  # request and result both consumed


async def test_a_failing_privileged_hook_rolls_back_to_the_previous_release(tmp_path):
    store = Store(tmp_path)
    assert await trio.to_thread.run_sync(store.activate, store.config(), "1.0") is None
    cfg = store.config(privileged_hook=store.hook('echo "dd: /dev/mmcblk0p2: No space left on device" >&2; exit 1'))
    problem = None

    async def node():
        nonlocal problem
        problem = await trio.to_thread.run_sync(store.activate, cfg, "1.1")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(node)
        nursery.start_soon(store.path_unit)
    assert problem == (f"privileged hook {cfg.privileged_hook!r} exited with 1: dd: /dev/mmcblk0p2: No space left "
                       "on device; rolled back to 1.0")
    assert install.current_version(store.installed) == "1.0"
    assert install.held_versions(store.installed) == {"1.1"}


async def test_no_result_in_time_counts_as_a_failed_hook(tmp_path):
    store = Store(tmp_path)
    assert await trio.to_thread.run_sync(store.activate, store.config(), "1.0") is None
    cfg = store.config(privileged_hook=store.hook("exit 0"), privileged_timeout_s=0.5)
    problem = await trio.to_thread.run_sync(store.activate, cfg, "1.1")
    assert problem == (f"privileged hook {cfg.privileged_hook!r}: no result within 0.5 s (is posswarm-activate.path"
                       f" enabled and watching {store.spool}?); rolled back to 1.0")
    assert install.current_version(store.installed) == "1.0"
    assert list(store.spool.glob("*.request")) == []  # withdrawn: root must not apply it after the rollback


async def test_root_trusts_the_file_system_not_the_request(tmp_path):
    store = Store(tmp_path)
    marker = tmp_path / "hook-ran"
    assert await trio.to_thread.run_sync(store.activate, store.config(), "1.0") is None
    assert await trio.to_thread.run_sync(store.activate, store.config(), "1.1") is None
    cfg = store.config(privileged_hook=store.hook(f"touch {marker}"))  # the file root reads from now on
    elsewhere = tmp_path / "etc"
    elsewhere.mkdir()
    (store.installed / "9.9").symlink_to(elsewhere)
    later = 4102444800.0
    store.spool.mkdir()
    requests = {
        "till-app@1.0": {"path": str(store.installed / "1.0"), "version": "1.0"},  # installed, but not current
        "till-app@1.1": {"path": str(elsewhere), "version": "1.1"},  # current, payload outside installed/
        "till-app@9.9": {"path": str(store.installed / "9.9"), "version": "9.9"},  # a symlink out of installed/
        "other@1.1": {"path": str(store.installed / "1.1"), "version": "1.1", "release": "till-app"},
    }
    for stem, fields in requests.items():
        doc = {"release": "till-app", "kind": "image", "deadline": later, **fields}
        (store.spool / f"{stem}.request").write_text(json.dumps(doc))
    (store.spool / "junk@1.request").write_bytes(b"\xff" * 10)
    (store.spool / "big@1.request").write_bytes(b" " * 100_000)
    (store.spool / "link@1.request").symlink_to("/etc/shadow")
    await store.activate_pending()
    assert not marker.exists()
    assert list(store.spool.glob("*.request")) == []
    answers = {p.name[: -len(".result")]: json.loads(p.read_text())["problem"] for p in store.spool.glob("*.result")}
    assert sorted(answers) == ["big@1", "junk@1", "link@1", "other@1.1", "till-app@1.0", "till-app@1.1",
                               "till-app@9.9"]
    assert all(problem.endswith("refused") for problem in answers.values()), answers
    assert "current points at 1.1, not 1.0" in answers["till-app@1.0"]
    assert "is not installed/till-app/1.1" in answers["till-app@1.1"]
    assert "is not installed/till-app/9.9" in answers["till-app@9.9"]
    assert "names till-app@1.1 inside" in answers["other@1.1"]
    assert "not JSON" in answers["junk@1"]
    assert "larger than 4096 bytes" in answers["big@1"]
    assert "cannot be opened" in answers["link@1"]
    # and the request that matches what is installed does run the hook
    (store.spool / "till-app@1.1.request").write_text(json.dumps(
        {"release": "till-app", "version": "1.1", "kind": "app", "path": str(store.installed / "1.1"),
         "deadline": later}))
    assert privileged.activate_pending(cfg, store.work) == 1
    assert marker.exists()


async def test_root_applies_what_central_signed_not_what_the_node_has_on_disk(tmp_path):
    store = Store(tmp_path)
    copied = tmp_path / "copied.bin"
    assert await trio.to_thread.run_sync(store.activate, store.config(), "1.0") is None
    cfg = store.config(privileged_hook=store.hook(f"cp till.bin {copied}"))
    request = {"release": "till-app", "version": "1.0", "kind": "app", "path": str(store.installed / "1.0"),
               "deadline": 4102444800.0}
    store.spool.mkdir()
    # a compromised node rewrites its installed payload: root's copy is rebuilt from the signed chunks anyway
    (store.installed / "1.0" / "till.bin").write_bytes(b"rootkit")
    (store.spool / "till-app@1.0.request").write_text(json.dumps(request))
    assert privileged.activate_pending(cfg, store.work) == 1
    assert json.loads((store.spool / "till-app@1.0.result").read_text())["problem"] is None
    assert copied.read_bytes() == (store.payload / "till.bin").read_bytes()
    # ... and when it rewrites a chunk too, nothing central did not sign reaches the hook
    copied.unlink()
    chunk = next((store.data / "releases" / "till-app" / "1.0" / "chunks").rglob("*/*"))
    size = chunk.stat().st_size
    chunk.unlink()  # a hard link into the publisher's chunk store: replace it, do not edit it in place
    chunk.write_bytes(b"x" * size)
    (store.spool / "till-app@1.0.request").write_text(json.dumps(request))
    assert privileged.activate_pending(cfg, store.work) == 1
    problem = json.loads((store.spool / "till-app@1.0.result").read_text())["problem"]
    assert "BLAKE3 does not match the manifest" in problem and problem.endswith("refused")
    assert not copied.exists()


@pytest.mark.parametrize(("keys", "named"), [
    ({"privileged_hook": "apply-image.sh"}, "must start with an absolute path"),
    ({"privileged_hook": "/usr/sbin/apply 'unclosed"}, "cannot be split into words"),
    ({"privileged_timeout_s": 0}, "'install.privileged_timeout_s' must be > 0 seconds"),
    ({"privileged_timeout_s": "5"}, "'install.privileged_timeout_s' must be a float"),
])
def test_bad_privileged_settings_are_named(tmp_path, keys, named):
    with pytest.raises(PosswarmError, match=named.replace("(", r"\(")):
        Store(tmp_path).config(**keys)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can answer as another user")
async def test_roots_answer_belongs_to_the_node_that_owns_the_spool(tmp_path):
    store = Store(tmp_path)
    store.config(privileged_hook=store.hook("exit 0"))
    store.spool.mkdir(parents=True)
    os.chown(store.spool, 65534, 65534)  # the node's user (nobody standing in for posswarm)
    (store.spool / "till-app@1.0.request").write_text("{}")
    await store.activate_pending()
    answer = (store.spool / "till-app@1.0.result").stat()
    assert (answer.st_uid, answer.st_gid, answer.st_mode & 0o777) == (65534, 65534, 0o600)


async def test_a_running_device_applies_a_release_through_root_and_rolls_back_when_root_says_no(tmp_path):
    """The whole path with real processes: tracker, seeder, cache, a device node, and the "path unit" loop
    starting ``posswarm activate-pending`` for each request the device leaves in its spool."""
    from tools.lab import Lab, write_image

    lab = Lab(tmp_path, devices=1)
    till = lab.devices[0]
    applied = tmp_path / "applied.txt"
    hook = tmp_path / "write-partition.sh"
    hook.write_text(f'#!/bin/sh\n[ "$POSSWARM_VERSION" != "1.1" ] || {{ echo "partition B is bad" >&2; exit 5; }}\n'
                    f'echo "$POSSWARM_VERSION $(cksum < image.bin)" >> {applied}\n')
    hook.chmod(0o755)
    spool = privileged.spool_dir(till.data_dir)

    async def path_unit():
        while True:
            if list(spool.glob("*.request")):
                await trio.run_process([str(POSSWARM), "activate-pending", "--config", str(till.config),
                                        "--work-dir", str(tmp_path / "root-work")], capture_stderr=True)
            await trio.sleep(0.05)  # polls the spool as the path unit's inotify watch would see it

    async def release_state(version: str) -> tuple[str, str]:
        while True:
            r = lab.release_of(till, "pos-image", version)
            if r and r["state"] in ("installed", "seeding", "rolled_back", "failed"):
                return r["state"], r["error"]
            await trio.sleep(0.2)

    images = {v: write_image(tmp_path / f"{v}.img", 3, seed=i) for i, v in enumerate(("1.0", "1.1"))}
    async with trio.open_nursery() as nursery:
        with trio.fail_after(90):
            await lab.start_central(nursery)
            await lab.start_node(nursery, lab.cache)
            await lab.start_node(nursery, till, extra={"install": {"privileged_hook": str(hook),
                                                                   "privileged_timeout_s": 60.0}})
        nursery.start_soon(path_unit)
        await lab.publish(images["1.0"], "1.0")
        with trio.fail_after(120):
            assert (await release_state("1.0"))[0] in ("installed", "seeding")
        cksum = subprocess.run(["cksum"], stdin=images["1.0"].open("rb"), capture_output=True, text=True).stdout
        assert applied.read_text() == f"1.0 {cksum}"
        await lab.publish(images["1.1"], "1.1")
        with trio.fail_after(120):
            state, error = await release_state("1.1")
        assert state == "rolled_back"
        assert error == f"privileged hook {str(hook)!r} exited with 5: partition B is bad; rolled back to 1.0"
        assert install.current_version(till.data_dir / "installed" / "pos-image") == "1.0"
        assert applied.read_text() == f"1.0 {cksum}"
        nursery.cancel_scope.cancel()
