"""Signed rollouts steer real nodes: a canary ring elsewhere keeps the store waiting, a promotion lets it
install, a revocation rolls the tills back (real seeder, tracker, cache and device processes)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import trio

from tools.lab import Lab, bin_path, write_image

NAME = "pos-image"


def _release(lab: Lab, command: str, version: str, *extra: str) -> None:
    done = subprocess.run([bin_path("posswarm-seeder"), "release", command, NAME, version, "--releases",
                           str(lab.releases), "--key", str(lab.private_key), *extra], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


async def test_canary_elsewhere_then_promote_then_revoke(tmp_path):
    lab = Lab(tmp_path, devices=2)
    (lab.releases / "rollouts.toml").write_text('rings = ["canary", "all"]\n[ring_stores]\ncanary = ["S-canary-*"]\n')
    till = lab.devices[0]
    assert Path(sys.executable).with_name("posswarm-seeder").exists()
    async with trio.open_nursery() as nursery:
        with trio.fail_after(60):
            await lab.start_central(nursery)
            for node in lab.nodes:
                await lab.start_node(nursery, node)
        await lab.publish(write_image(tmp_path / "a.img", 8, seed=1), "1.0", name=NAME)  # at ring canary

        # the cache takes the signed rollout, sees canary has not reached its store, and fetches nothing
        held = lab.cache.data_dir / "rollouts" / f"{NAME}@1.0.msgpack"
        with trio.fail_after(30):
            while not held.exists():
                await trio.sleep(0.1)  # polls for the file the cache writes when it takes the rollout
            seen = lab.status_of(lab.cache)["catalog"]["last_ok"]
            while (lab.status_of(lab.cache) or {}).get("catalog", {}).get("last_ok", 0) <= seen:
                await trio.sleep(0.1)  # one more catalog poll after the rollout
        assert lab.status_of(lab.cache)["releases"] == []

        _release(lab, "promote", "1.0")  # canary -> all
        with trio.fail_after(60):
            await lab.wait_installed(NAME, "1.0")
        assert lab.release_of(lab.cache, NAME, "1.0")["rollout"] == {"sequence": 2, "state": "active", "ring": "all"}
        with trio.fail_after(30):  # the network engineer's view: the tracker groups the rollout by ring
            while True:
                async with httpx.AsyncClient(headers=lab.operator_headers, verify=lab.central_tls) as client:
                    rings = (await client.get(f"{lab.tracker_url}/stats")).json()["releases"].get(
                        f"{NAME}@1.0", {}).get("rings", {})
                if rings.get("all", {}).get("devices_installed") == 2:
                    break
                await trio.sleep(0.5)  # nodes announce every 2 s in the lab

        await lab.publish(write_image(tmp_path / "b.img", 8, seed=2), "1.1", name=NAME)
        _release(lab, "promote", "1.1", "--to", "all")
        with trio.fail_after(60):
            await lab.wait_installed(NAME, "1.1")

        _release(lab, "revoke", "1.1")
        current = till.data_dir / "installed" / NAME / "current"
        with trio.fail_after(60):
            while not all((lab.release_of(d, NAME, "1.1") or {}).get("state") == "revoked" for d in lab.devices):
                await trio.sleep(0.1)  # polls status.json, rewritten every 0.5 s
        for device in lab.devices:
            assert (device.data_dir / "installed" / NAME / "current").resolve().name == "1.0"
        doc = lab.status_of(till)
        r11 = next(r for r in doc["releases"] if r["version"] == "1.1")
        assert r11["state"] == "revoked" and "revoked by central" in r11["error"]
        assert current.resolve().name == "1.0"
        assert "1.1" in (till.data_dir / "installed" / NAME / "held").read_text().split()
        nursery.cancel_scope.cancel()
