"""``posswarm demo --slots``: a store's tills take an OS image into their other A/B boot slot (loop devices when
run as root), reboot into it once on trial and confirm it; the lab's grub environments play the bootloader."""

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
from tools.lab import Lab
from tools.slot_boot import boot, disk_use, slot_config

RELEASE, VERSION = "pos-os", "2026.12"


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
                await _until(lab, "boot_pending")
                console.print("every till wrote slot b, read it back against the signed BLAKE3 and armed a trial "
                              "boot; rebooting them ...")
                rebooted = time.time()
                fetched = {d.name: lab.release_of(d, RELEASE, VERSION) for d in lab.devices}  # counters end at a reboot
                for d in lab.devices:
                    lab.kill(d)
                    while d.name not in lab.exited:  # its end is noted, so the restart clears it
                        await trio.sleep(0.05)
                    await boot(lab, nursery, d, configs[d.name])
                await _until(lab, "installed")
            result = _result(lab, fetched, rebooted, image.stat().st_size, kind)
            nursery.cancel_scope.cancel()
    finally:
        for device in attached:
            subprocess.run(["losetup", "-d", device], check=False)
    return result


async def _until(lab: Lab, state: str) -> None:
    while True:
        if lab.exited:
            who, how = next(iter(lab.exited.items()))
            raise PosswarmError(f"{who} {how}")
        if all((r := lab.release_of(d, RELEASE, VERSION)) and r["state"] == state for d in lab.devices):
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


def print_result(console: Console, result: dict) -> None:
    table = Table("till", "slot", "version", "boot", "from WAN", "from LAN", "disk outside slots")
    for t in result["tills"]:
        table.add_row(t["till"], t["slot"] or "-", t["version"] or "-", t["boot"] or "-",
                      f"{t['bytes_from_wan'] / 1e6:.1f} MB", f"{t['bytes_from_lan'] / 1e6:.1f} MB",
                      f"{t['outside_slots_x_image']:.2f} x image")
    console.print(table)
    console.print(f"{result['release']} into the tills' slot b ({result['slots']}); reboot to confirmed trial boot on "
                  f"every till: {result['reboot_to_confirmed_s']} s")
