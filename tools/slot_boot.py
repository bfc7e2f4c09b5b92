"""Power a till on as its bootloader would: choose the slot from the environment, count a trial down, and write
the kernel command line the node then reads (the lab's and the tests' stand-in for GRUB's or U-Boot's script)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from posswarm.slots import state
from posswarm.slots.bootloader import Bootloader


def power_on(bootloader: Bootloader, cmdline: Path) -> str:
    """The slot started; the environment is left as the bootloader's script leaves it (docs/slots.md)."""
    env = state.parse_env(bootloader.read(), source=bootloader.what)
    slot, updates = state.choose_boot(env)
    if updates:
        bootloader.write(updates)
    cmdline.write_text(f"BOOT_IMAGE=/vmlinuz-{slot} root=PARTLABEL=pos_{slot} ro quiet {state.CMDLINE_KEY}={slot}\n")
    return slot


def slot_config(root: Path, name: str, slots: list[str] | None = None, **install) -> dict:
    """A lab till's [install] section: two slots (files under ``root`` unless given), a grub environment, the
    command line its bootloader writes, and a health check that passes."""
    here = root / "boot" / name
    here.mkdir(parents=True, exist_ok=True)
    slots = slots or [str(here / "slot-a.img"), str(here / "slot-b.img")]
    return {"install": {"slots": slots, "bootloader": "grub", "bootloader_env": str(here / "grubenv"),
                        "boot_cmdline": str(here / "cmdline"), "health_check": "true", **install}}


async def boot(lab, nursery, device, config: dict) -> str:
    """Power a lab till on: the bootloader's step on its environment, then its node. Returns the slot started."""
    install = config["install"]
    slot = power_on(Bootloader("grub", env_file=install["bootloader_env"]), Path(install["boot_cmdline"]))
    await lab.start_node(nursery, device, extra=config)
    return slot


def disk_use(root: Path) -> int:
    """Bytes of the distinct files under ``root`` (a chunk hard-linked twice counts once), read while the node runs:
    a file it renames or removes between the listing and the look (a chunk's temp file) is not counted."""
    seen, total = set(), 0
    for directory, _, names in os.walk(root):  # a directory gone meanwhile is skipped, as os.walk does
        for name in names:
            try:
                st = os.lstat(os.path.join(directory, name))
            except FileNotFoundError:
                continue
            if stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total
