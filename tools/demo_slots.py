"""``posswarm demo --slots``: a store's tills take an OS image into their other A/B boot slot (loop devices when
run as root), reboot into it once on trial and confirm it, then take its next version by the delta from the slot
they run; the lab's grub environments play the bootloader."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import trio
from rich.console import Console
from rich.table import Table

from posswarm.errors import PosswarmError
from tools import payloads
from tools.lab import Lab
from tools.slot_boot import boot, disk_use, slot_config

RELEASE, VERSION, NEXT = "pos-os", "2026.12", "2027.01"


def _loop_slots(root: Path, name: str, size_mb: int, attached: list[str]) -> list[str] | None:
    """Two loop devices of ``size_mb`` MiB for a till when this runs as root with losetup, else None (files)."""
    if os.geteuid() != 0 or shutil.which("losetup") is None:
        return None
    devices = []
    for slot in ("a", "b"):
        backing = root / "boot" / name / f"slot-{slot}.backing"
        backing.parent.mkdir(parents=True, exist_ok=True)
        with open(backing, "wb") as f:
            f.truncate(size_mb << 20)
        done = subprocess.run(["losetup", "--find", "--show", str(backing)], capture_output=True, text=True)
        if done.returncode != 0:
            return None
        attached.append(done.stdout.strip())
        devices.append(done.stdout.strip())
    return devices


async def run(lab: Lab, image: Path, args, console: Console) -> dict:
    """Publish, wait for every till's slot to be written and armed, reboot them all, wait for the confirmations."""
    attached: list[str] = []
    try:
        async with trio.open_nursery() as nursery:
            await lab.start_central(nursery)
            await lab.start_node(nursery, lab.cache)
            configs = {}
            for d in lab.devices:
                slots = _loop_slots(lab.root, d.name, image.stat().st_size // (1 << 20) + 2, attached)
                configs[d.name] = slot_config(lab.root, d.name, slots)
                await boot(lab, nursery, d, configs[d.name])
            kind = "loop devices" if attached else "files (run as root for loop devices)"
            console.print(f"started {len(lab.nodes)} nodes, tills booted slot a; slots are {kind}; publishing ...")
            await lab.publish(image, VERSION, name=RELEASE)
            with trio.fail_after(args.timeout):
                await _until(lab, VERSION, "boot_pending")
                console.print("every till wrote slot b, read it back against the signed BLAKE3 and armed a trial "
                              "boot; rebooting them ...")
                rebooted = time.time()
                fetched = {d.name: lab.release_of(d, RELEASE, VERSION) for d in lab.devices}  # counters end at a reboot
                await _reboot(lab, nursery, configs)
                await _until(lab, VERSION, "installed")
            result = _result(lab, fetched, rebooted, image.stat().st_size, kind)
            at_rest = {d.name: disk_use(d.data_dir) for d in lab.devices}
            console.print(f"{VERSION} runs confirmed; publishing {NEXT}, which the tills take by the delta from "
                          "the slot they run ...")
            two, changed = payloads.update(lab.root / "payload", image, args.image_mb, args.payload, percent=5)
            await lab.publish(two, NEXT, name=RELEASE)
            with trio.fail_after(args.timeout):
                await _until(lab, NEXT, "boot_pending")
                update = {d.name: (lab.release_of(d, RELEASE, NEXT), disk_use(d.data_dir)) for d in lab.devices}
                await _reboot(lab, nursery, configs)
                await _until(lab, NEXT, "installed")
            result["update"] = _update_result(lab, update, at_rest, image.stat().st_size, changed)
            result["all_installed"] &= all((lab.status_of(d) or {}).get("slots", {}).get("version") == NEXT
                                           for d in lab.devices)
            nursery.cancel_scope.cancel()
    finally:
        for device in attached:
            subprocess.run(["losetup", "-d", device], check=False)
    return result


async def _reboot(lab: Lab, nursery, configs: dict) -> None:
    """Power each till off and on: the bootloader's step, then its node."""
    for d in lab.devices:
        lab.kill(d)
        while d.name not in lab.exited:  # its end is noted, so the restart clears it
            await trio.sleep(0.05)
        await boot(lab, nursery, d, configs[d.name])


async def _until(lab: Lab, version: str, state: str) -> None:
    while True:
        if lab.exited:
            who, how = next(iter(lab.exited.items()))
            raise PosswarmError(f"{who} {how}")
        if all((r := lab.release_of(d, RELEASE, version)) and r["state"] == state for d in lab.devices):
            return
        await trio.sleep(0.25)


def _result(lab: Lab, fetched: dict, rebooted: float, image_bytes: int, kind: str) -> dict:
    tills = []
    for d in lab.devices:
        r, s = fetched[d.name], (lab.status_of(d) or {}).get("slots") or {}
        tills.append({"till": d.name, "slot": s.get("booted"), "version": s.get("version"), "boot": s.get("boot"),
                      "bytes_from_wan": r["bytes_from_wan"], "bytes_from_lan": r["bytes_from_lan"],
                      "outside_slots_x_image": round(disk_use(d.data_dir) / image_bytes, 3)})
    return {"slots": kind, "release": f"{RELEASE} {VERSION}", "image_bytes": image_bytes,
            "reboot_to_confirmed_s": round(time.time() - rebooted, 1), "tills": tills,
            "all_installed": all(t["boot"] == "confirmed" for t in tills)}


def _update_result(lab: Lab, update: dict, at_rest: dict, image_bytes: int, changed: int) -> dict:
    tills = []
    for d in lab.devices:
        r, peak = update[d.name]
        tills.append({"till": d.name, "bytes_from_wan": r["bytes_from_wan"], "bytes_from_lan": r["bytes_from_lan"],
                      "read_from_slot_bytes": r["reused_bytes"],
                      "at_rest_x_image": round(at_rest[d.name] / image_bytes, 3),
                      "peak_x_image": round(peak / image_bytes, 3),
                      "after_x_image": round(disk_use(d.data_dir) / image_bytes, 3)})
    cache = lab.release_of(lab.cache, RELEASE, NEXT)
    return {"release": f"{RELEASE} {NEXT}", "content_changed_bytes": changed,
            "store_bytes_from_wan": cache["bytes_from_wan"], "tills": tills}


def print_result(console: Console, result: dict) -> None:
    table = Table("till", "slot", "version", "boot", "from WAN", "from LAN", "disk outside slots")
    for t in result["tills"]:
        table.add_row(t["till"], t["slot"] or "-", t["version"] or "-", t["boot"] or "-",
                      f"{t['bytes_from_wan'] / 1e6:.1f} MB", f"{t['bytes_from_lan'] / 1e6:.1f} MB",
                      f"{t['outside_slots_x_image']:.2f} x image")
    console.print(table)
    console.print(f"{result['release']} into the tills' slot b ({result['slots']}); reboot to confirmed trial boot on "
                  f"every till: {result['reboot_to_confirmed_s']} s")
    if update := result.get("update"):
        table = Table("till", "from WAN", "from LAN", "read from its slot", "outside slots: at rest", "peak", "after")
        for t in update["tills"]:
            table.add_row(t["till"], f"{t['bytes_from_wan'] / 1e6:.2f} MB", f"{t['bytes_from_lan'] / 1e6:.2f} MB",
                          f"{t['read_from_slot_bytes'] / 1e6:.2f} MB", f"{t['at_rest_x_image']:.3f} x image",
                          f"{t['peak_x_image']:.3f} x", f"{t['after_x_image']:.3f} x")
        console.print(table)
        console.print(f"{update['release']} by the delta from the slot: {update['content_changed_bytes'] / 1e6:.2f} MB "
                      f"of content changed, the store fetched {update['store_bytes_from_wan'] / 1e6:.2f} MB over the WAN")
