"""Power a till on as its bootloader would: choose the slot from the environment, count a trial down, and write
the kernel command line the node then reads (the lab's and the tests' stand-in for GRUB's or U-Boot's script)."""

from __future__ import annotations

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
