"""A node left alone in a store: health-check rollback, SIGKILL mid-download, a full disk (real processes)."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import blake3
import pytest
import trio

from tools.lab import Lab, write_image

NAME = "pos-image"


def _posswarm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).with_name("posswarm")), *args], capture_output=True, text=True)


async def _wait(lab: Lab, node, predicate, what: str, seconds: float = 60) -> dict:
    with trio.fail_after(seconds):
        while True:
            doc = lab.status_of(node)
            if doc is not None and predicate(doc):
                return doc
            await trio.sleep(0.2)  # polls status.json, which the node rewrites every 0.5 s


def _release(doc: dict, version: str) -> dict:
    return next((r for r in doc["releases"] if r["version"] == version), {})


async def _publish_images(lab: Lab, tmp_path: Path, versions: list[str], size_mb: int = 8) -> None:
    for version in versions:
        folder = tmp_path / f"v{version}"
        folder.mkdir()
        seed = int.from_bytes(version.encode(), "big")  # a different image per version
        await lab.publish(write_image(folder / "pos.img", size_mb, seed=seed), version, name=NAME)


async def test_failed_health_check_rolls_back_and_the_rollback_command_works(tmp_path):
    lab = Lab(tmp_path, devices=1)
    check = tmp_path / "health.sh"
    check.write_text('#!/bin/sh\n[ "$POSSWARM_VERSION" != "1.1" ] || { echo "till app does not start" >&2; exit 3; }\n')
    check.chmod(0o755)
    till = lab.devices[0]
    async with trio.open_nursery() as nursery:
        with trio.fail_after(60):
            await lab.start_central(nursery)
            await lab.start_node(nursery, lab.cache)
            await lab.start_node(nursery, till, extra={"install": {"health_check": str(check)}})
        await _publish_images(lab, tmp_path, ["1.0"])
        with trio.fail_after(60):
            await lab.wait_installed(NAME, "1.0")
        await _publish_images(lab, tmp_path, ["1.1"])
        doc = await _wait(lab, till, lambda d: _release(d, "1.1").get("state") == "rolled_back", "1.1 rolled back")
        assert "exited with 3: till app does not start; rolled back to 1.0" in _release(doc, "1.1")["error"]
        assert doc["installed"][NAME] == {"current": "1.0", "previous": "1.1"}

        await _publish_images(lab, tmp_path, ["1.2"])
        doc = await _wait(lab, till, lambda d: d["installed"].get(NAME, {}).get("current") == "1.2", "1.2 current")
        assert doc["installed"][NAME]["previous"] == "1.0"
        # garbage collection keeps current (1.2) and previous (1.0); held 1.1 goes, with the chunks only it used
        releases = till.data_dir / "releases" / NAME

        def chunks_in(root: Path) -> set[str]:
            return {p.name for p in root.glob("chunks/*/*")}

        with trio.fail_after(10):
            # the node removes 1.1's directory, then prunes the chunks nothing links to any more: both must happen
            while (releases / "1.1").exists() or chunks_in(till.data_dir / "chunks") != (
                    chunks_in(releases / "1.0") | chunks_in(releases / "1.2")):
                await trio.sleep(0.1)  # polls the directories the node rewrites after its switch
        assert sorted(p.name for p in releases.iterdir()) == ["1.0", "1.2"]

        rolled = _posswarm("rollback", "--config", str(till.config))
        assert rolled.returncode == 0, rolled.stderr
        assert "rolled back from 1.2 to 1.0" in rolled.stdout
        root = till.data_dir / "installed" / NAME
        assert (root / "current").resolve().name == "1.0" and (root / "held").read_text().split() == ["1.1", "1.2"]
        again = _posswarm("rollback", "nonexistent", "--config", str(till.config))
        assert again.returncode == 1 and "not installed here" in again.stderr and "Traceback" not in again.stderr
        nursery.cancel_scope.cancel()


async def test_cache_killed_mid_download_resumes_without_fetching_verified_chunks_again(tmp_path):
    lab = Lab(tmp_path, devices=1)
    size_mb = 16
    throttle = {"wan": {"download_limit_kbps": 24_000}}  # 3 MB/s: about 5.6 s for the image
    async with trio.open_nursery() as nursery:
        with trio.fail_after(60):
            await lab.start_central(nursery)
            for node in lab.nodes:
                await lab.start_node(nursery, node, extra=throttle if node is lab.cache else None)
        await _publish_images(lab, tmp_path, ["1.0"], size_mb)
        doc = await _wait(lab, lab.cache, lambda d: 30 <= _release(d, "1.0").get("percent", 0) < 90, "30 % done")
        before_kill = _release(doc, "1.0")["done_bytes"]
        lab.kill(lab.cache)
        await lab.start_node(nursery, lab.cache, extra=throttle)
        with trio.fail_after(90):
            await lab.wait_installed(NAME, "1.0")
        after = lab.release_of(lab.cache, NAME, "1.0")
        size = size_mb << 20
        figures = {"image_bytes": size, "verified_before_kill": before_kill, "fetched_after_restart": after["bytes_from_wan"],
                   "refetched_bytes": after["bytes_from_wan"] - (size - before_kill)}
        artifacts = Path(__file__).parents[2] / "test-artifacts"
        artifacts.mkdir(exist_ok=True)
        (artifacts / "cache-sigkill-resume.json").write_text(json.dumps(figures, indent=1))
        # what the restarted cache fetched is what it lacked: verified pieces were kept. The slack is what was
        # in flight at the kill: libtorrent keeps request_queue_time (1 s) of the capped rate requested, and
        # blocks received but not yet on disk; under a loaded CI machine that measured up to 2.6 MB.
        in_flight = throttle["wan"]["download_limit_kbps"] * 1000 // 8 * 1 + (1 << 20)
        assert after["bytes_from_wan"] <= size - before_kill + in_flight, (after, before_kill)
        device = lab.release_of(lab.devices[0], NAME, "1.0")
        assert device["state"] == "installed" and device["bytes_from_wan"] == 0
        nursery.cancel_scope.cancel()


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("mount") is None, reason="mounting a tmpfs needs root")
async def test_a_full_disk_keeps_the_running_release_and_recovers_when_space_frees(tmp_path):
    lab = Lab(tmp_path, devices=1)
    till = lab.devices[0]
    till.data_dir.mkdir(parents=True)
    # 8 MiB images: 1.0 takes ~16 MiB (chunks + installed copy); 1.1 needs ~16 MiB more
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=26m", "tmpfs", str(till.data_dir)], check=True)
    try:
        async with trio.open_nursery() as nursery:
            with trio.fail_after(60):
                await lab.start_central(nursery)
                for node in lab.nodes:
                    await lab.start_node(nursery, node)
            await _publish_images(lab, tmp_path, ["1.0"])
            with trio.fail_after(60):
                await lab.wait_installed(NAME, "1.0")
            installed = (till.data_dir / "installed" / NAME / "1.0" / "image.bin").read_bytes()
            await _publish_images(lab, tmp_path, ["1.1"])
            doc = await _wait(lab, till, lambda d: _release(d, "1.1").get("state") == "failed", "1.1 failed")
            assert "disk full" in _release(doc, "1.1")["error"]
            assert doc["installed"][NAME]["current"] == "1.0"
            assert (till.data_dir / "installed" / NAME / "current" / "image.bin").read_bytes() == installed
            subprocess.run(["mount", "-o", "remount,size=64m", str(till.data_dir)], check=True)
            doc = await _wait(lab, till, lambda d: d["installed"][NAME]["current"] == "1.1", "1.1 after space freed")
            assert _release(doc, "1.1")["state"] == "installed"
            nursery.cancel_scope.cancel()
    finally:
        subprocess.run(["umount", "-l", str(till.data_dir)], check=False)


async def test_killed_at_random_points_a_device_never_exposes_a_partial_current(tmp_path):
    lab = Lab(tmp_path, devices=1)
    till = lab.devices[0]
    rng = random.Random(6)
    images = {}
    async with trio.open_nursery() as nursery:
        with trio.fail_after(60):
            await lab.start_central(nursery)
            for node in lab.nodes:
                await lab.start_node(nursery, node)
        for version in ("1.0", "1.1"):
            folder = tmp_path / f"v{version}"
            folder.mkdir()
            images[version] = write_image(folder / "pos.img", 32, seed=len(version) + int(version[-1])).read_bytes()
            await lab.publish(folder / "pos.img", version, name=NAME)
            if version == "1.0":
                with trio.fail_after(60):
                    await lab.wait_installed(NAME, "1.0")
        seen = []
        current = till.data_dir / "installed" / NAME / "current"
        for _ in range(6):
            doc = await _wait(lab, till, lambda d: True, "node up")
            await trio.sleep(rng.uniform(0.0, 1.5))  # fault injection: a power cut at a random moment
            doc = lab.status_of(till) or doc
            seen.append(_release(doc, "1.1").get("state", "unknown"))
            lab.kill(till)
            running = current.resolve().name
            assert running in images and (current / "image.bin").read_bytes() == images[running]
            assert not (current.parent / ".current.tmp").exists() or (current.parent / "current").exists()
            await lab.start_node(nursery, till)
        with trio.fail_after(90):
            await lab.wait_installed(NAME, "1.1")
        assert (current / "image.bin").read_bytes() == images["1.1"]
        assert (current.parent / "previous" / "image.bin").read_bytes() == images["1.0"]
        artifacts = Path(__file__).parents[2] / "test-artifacts"
        artifacts.mkdir(exist_ok=True)
        (artifacts / "device-random-kills.json").write_text(json.dumps({"states_at_kill": seen}))
        nursery.cancel_scope.cancel()


async def test_a_till_killed_mid_stream_writes_its_staging_again_and_installs_only_the_signed_payload(tmp_path):
    lab = Lab(tmp_path, devices=1)
    till = lab.devices[0]
    throttle = {"wan": {"download_limit_kbps": 24_000}}  # 3 MB/s into the store: the till streams for seconds
    async with trio.open_nursery() as nursery:
        with trio.fail_after(60):
            await lab.start_central(nursery)
            for node in lab.nodes:
                await lab.start_node(nursery, node, extra=throttle if node is lab.cache else None)
        await _publish_images(lab, tmp_path, ["1.0"], 16)
        image = (tmp_path / "v1.0" / "pos.img").read_bytes()
        root = till.data_dir / "installed" / NAME
        staging = root / ".staging-1.0"
        await _wait(lab, till, lambda d: 20 <= _release(d, "1.0").get("percent", 0) < 80 and staging.is_dir(),
                    "the till half-way through its download")
        lab.kill(till)
        # what the power cut leaves: a staging written in part as the chunks came, nothing that looks installed
        block = 4096
        written = (staging / "image.bin").read_bytes()
        same = sum(written[i:i + block] == image[i:i + block] for i in range(0, len(image), block))
        assert 0 < same < len(image) // block, f"{same} of {len(image) // block} blocks written before the kill"
        assert not (root / "1.0").exists() and not (root / "current").is_symlink()
        await lab.start_node(nursery, till)
        with trio.fail_after(90):
            await lab.wait_installed(NAME, "1.0")
        assert (root / "current" / "image.bin").read_bytes() == image
        assert not staging.exists()
        assert "payload.streamed" in (lab.logs / f"{till.name}.log").read_text()
        nursery.cancel_scope.cancel()


async def test_a_cache_finds_rot_on_its_own_disk_and_fetches_the_chunk_again(tmp_path):
    lab = Lab(tmp_path, devices=1)
    async with trio.open_nursery() as nursery:
        with trio.fail_after(60):
            await lab.start_central(nursery)
            await lab.start_node(nursery, lab.cache, extra={"timing": {"scrub_every_s": 1.0}})
        await _publish_images(lab, tmp_path, ["1.0"])
        await _wait(lab, lab.cache, lambda d: _release(d, "1.0").get("state") == "seeding", "cache seeding")
        chunks = sorted((lab.cache.data_dir / "releases" / NAME / "1.0" / "chunks").glob("*/*"))
        rotten = chunks[len(chunks) // 2]
        with open(rotten, "r+b") as f:  # a flipped bit on disk: same size, so libtorrent's resume check passes
            f.seek(1000)
            byte = f.read(1)
            f.seek(1000)
            f.write(bytes([byte[0] ^ 0x40]))
        assert blake3.blake3(rotten.read_bytes()).hexdigest() != rotten.name
        with trio.fail_after(60):
            while not (rotten.exists() and blake3.blake3(rotten.read_bytes()).hexdigest() == rotten.name  # fetched anew
                       and _release(lab.status_of(lab.cache) or {}, "1.0").get("state") == "seeding"):
                await trio.sleep(0.2)  # polls the file and status.json
        await lab.start_node(nursery, lab.devices[0])
        with trio.fail_after(60):
            await lab.wait_installed(NAME, "1.0")
        assert "scrub.found_corruption" in (lab.logs / "cache.log").read_text()
        nursery.cancel_scope.cancel()


async def test_a_wan_window_caps_the_cache_and_never_the_store_lan(tmp_path):
    lab = Lab(tmp_path, devices=1)
    window = {"wan": {"schedule": ["daily 00:00-24:00 16000"]}}  # 2 MB/s all day, in the store's time zone
    async with trio.open_nursery() as nursery:
        with trio.fail_after(60):
            await lab.start_central(nursery)
            for node in lab.nodes:
                await lab.start_node(nursery, node, extra=window if node is lab.cache else None)
        await _publish_images(lab, tmp_path, ["1.0"], size_mb=8)
        with trio.fail_after(90):
            await lab.wait_installed(NAME, "1.0")
        cache = lab.status_of(lab.cache)
        assert cache["wan_caps_kbps"] == {"download": 16000, "upload": 16000}
        r = _release(cache, "1.0")
        # a lower bound on time is robust on a slow machine: 8 MiB cannot cross a 2 MB/s cap in under ~4 s
        assert r["done_at"] - r["learned_at"] >= (8 << 20) / 2_000_000 * 0.9
        device = _release(lab.status_of(lab.devices[0]), "1.0")
        assert device["bytes_from_lan"] >= 8 << 20
        nursery.cancel_scope.cancel()


async def test_an_oci_app_reaches_the_post_install_hook(tmp_path):
    from ..seeder.test_oci import make_layout

    lab = Lab(tmp_path, devices=1)
    hook = tmp_path / "load-app.sh"
    seen = tmp_path / "loaded.txt"
    hook.write_text(f'#!/bin/sh\necho "$POSSWARM_KIND $POSSWARM_RELEASE $POSSWARM_VERSION" > {seen}\n'
                    f'test -f "$POSSWARM_PATH/index.json"\n')
    hook.chmod(0o755)
    layout = make_layout(tmp_path / "till-app", [os.urandom(2 << 20), os.urandom(1 << 20)])
    async with trio.open_nursery() as nursery:
        with trio.fail_after(60):
            await lab.start_central(nursery)
            await lab.start_node(nursery, lab.cache)
            await lab.start_node(nursery, lab.devices[0], extra={"install": {"post_install": str(hook)}})
        await lab.publish(layout, "3.2.0", name="till-app")
        with trio.fail_after(60):
            await lab.wait_installed("till-app", "3.2.0")
        assert seen.read_text().split() == ["oci", "till-app", "3.2.0"]
        current = lab.devices[0].data_dir / "installed" / "till-app" / "current"
        assert (current / "index.json").read_bytes() == (layout / "index.json").read_bytes()
        nursery.cancel_scope.cancel()
