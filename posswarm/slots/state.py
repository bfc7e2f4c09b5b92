"""What the bootloader environment says about a till's two boot slots, and the changes the node makes to it (pure).

The environment holds only short ``posswarm_*`` strings (a GRUB environment block is 1 KiB in all):
``posswarm_primary`` the slot booted normally; ``posswarm_trial`` a slot to try, with ``posswarm_tries`` boots
left (the bootloader itself counts them down, so a trial that hangs or crash-loops falls back without the node);
per slot ``posswarm_a_name``, ``posswarm_a_version`` and ``posswarm_a_state`` (empty, writing, written, good,
bad); the last verdict in ``posswarm_outcome`` and ``posswarm_reason``. docs/slots.md has the bootloader side.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from posswarm.errors import PosswarmError

SLOT_IDS = ("a", "b")
#: Kernel command-line key naming the slot the bootloader started (``posswarm.slot=b``).
CMDLINE_KEY = "posswarm.slot"
#: Boots a trial gets before the bootloader gives up on it: one, as boot-once schemes do.
TRIAL_BOOTS = 1
#: The bootloader environment is short; a value longer than this is garbage, not a slot state.
MAX_VALUE = 200
MAX_REASON = 160
SLOT_STATES = ("", "writing", "written", "good", "bad")
_VALUE = re.compile(r"[^\x00-\x1f\x7f]*")

# outcomes of the last trial, as status shows them
TRIAL = "trial"
CONFIRMED = "confirmed"
FELL_BACK = "fell back"
REJECTED = "rejected"


@dataclass(frozen=True)
class Slot:
    id: str
    name: str = ""
    version: str = ""
    state: str = ""  # one of SLOT_STATES


@dataclass(frozen=True)
class BootEnv:
    """The slots as the environment describes them."""

    primary: str
    trial: str  # "" = none
    tries: int
    slots: dict[str, Slot]
    outcome: str = ""
    reason: str = ""

    def other(self, slot: str) -> str:
        return SLOT_IDS[1 - SLOT_IDS.index(slot)]


def parse_env(raw: dict[str, str], *, source: str) -> BootEnv:
    """The ``posswarm_*`` variables of a bootloader environment; PosswarmError for values no node writes."""
    def get(key: str, allowed: tuple[str, ...] | None = None) -> str:
        value = raw.get(f"posswarm_{key}", "")
        if len(value) > MAX_VALUE or not _VALUE.fullmatch(value) or (allowed is not None and value not in allowed):
            raise PosswarmError(f"{source}: posswarm_{key}={value[:40]!r} is not a value the node writes "
                                "(edited by hand? set it with the bootloader's own tool, see docs/slots.md)")
        return value

    tries = get("tries")
    if tries and not tries.isdigit():
        raise PosswarmError(f"{source}: posswarm_tries={tries[:40]!r} is not a count (see docs/slots.md)")
    slots = {s: Slot(s, get(f"{s}_name"), get(f"{s}_version"), get(f"{s}_state", SLOT_STATES)) for s in SLOT_IDS}
    return BootEnv(get("primary", ("", *SLOT_IDS)) or SLOT_IDS[0], get("trial", ("", *SLOT_IDS)), int(tries or 0),
                   slots, get("outcome"), get("reason"))


def booted_slot(cmdline: str, *, source: str) -> str:
    """The slot the bootloader started, from a kernel command line (or a file written like one)."""
    for word in cmdline.split():
        key, _, value = word.partition("=")
        if key == CMDLINE_KEY:
            if value not in SLOT_IDS:
                raise PosswarmError(f"{source}: {CMDLINE_KEY}={value[:20]!r} names no slot (use a or b)")
            return value
    raise PosswarmError(f"{source}: no {CMDLINE_KEY}= on the kernel command line (add {CMDLINE_KEY}=a or b to "
                        "each boot entry, see docs/slots.md)")


def choose_boot(env: BootEnv) -> tuple[str, dict[str, str]]:
    """What the bootloader does at power-on: the slot it starts and what it writes back first.

    A trial with boots left is started and its count goes down before it starts (so a crash counts); a trial
    with none left is given up and the primary slot starts: the node sees the trial still named and falls back.
    docs/slots.md has the same logic as GRUB script and as a U-Boot bootcmd.
    """
    if env.trial and env.tries > 0:
        return env.trial, {"posswarm_tries": str(env.tries - 1)}
    return env.primary, {}


def start_writing(env: BootEnv, slot: str, name: str, version: str) -> dict[str, str]:
    """Before the first byte goes into ``slot``: it boots nothing, and a trial of it is called off."""
    updates = {f"posswarm_{slot}_name": name, f"posswarm_{slot}_version": version, f"posswarm_{slot}_state": "writing"}
    if env.trial == slot:
        updates |= {"posswarm_trial": "", "posswarm_tries": "0"}
    return updates


def arm_trial(slot: str) -> dict[str, str]:
    """``slot`` was written, fsynced and read back against the signed payload BLAKE3: boot it once."""
    return {f"posswarm_{slot}_state": "written", "posswarm_trial": slot, "posswarm_tries": str(TRIAL_BOOTS),
            "posswarm_outcome": "", "posswarm_reason": ""}


def on_start(env: BootEnv, booted: str) -> tuple[str, dict[str, str]]:
    """What the node finds at start: TRIAL (run the health check, then confirm or reject), FELL_BACK (the
    bootloader gave the trial up: the updates record it), or "" (a normal boot, or a trial not started yet)."""
    if not env.trial:
        return "", {}
    if booted == env.trial:
        return TRIAL, {}
    if env.tries > 0:
        return "", {}  # armed, the till has not rebooted yet
    s = env.slots[env.trial]
    reason = (f"trial boot of slot {s.id} ({s.name} {s.version}) never confirmed; the bootloader went back to "
              f"slot {booted}")
    return FELL_BACK, _verdict(env.trial, FELL_BACK, reason)


def confirm(booted: str) -> dict[str, str]:
    """The trial slot passed its health check: it becomes the slot booted from now on."""
    return {"posswarm_primary": booted, f"posswarm_{booted}_state": "good", "posswarm_trial": "", "posswarm_tries": "0",
            "posswarm_outcome": CONFIRMED, "posswarm_reason": ""}


def reject(booted: str, reason: str) -> dict[str, str]:
    """The trial slot failed its health check: never boot it again; the primary slot starts next time."""
    return _verdict(booted, REJECTED, reason)


def _verdict(slot: str, outcome: str, reason: str) -> dict[str, str]:
    return {f"posswarm_{slot}_state": "bad", "posswarm_trial": "", "posswarm_tries": "0", "posswarm_outcome": outcome,
            "posswarm_reason": _short(reason)}


def _short(text: str) -> str:
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 3] + "..."


def running(env: BootEnv, booted: str, name: str) -> tuple[str | None, str | None, str | None]:
    """(current, previous, pending) versions of release ``name`` on the slots.

    current: the booted slot's; previous: the other slot's while it is a good fallback; pending: the other
    slot's while it is written and armed for a trial boot not yet made.
    """
    here, there = env.slots[booted], env.slots[env.other(booted)]
    current = here.version if here.name == name and here.version else None
    previous = there.version if there.name == name and there.state == "good" else None
    pending = there.version if there.name == name and there.state == "written" and env.trial == there.id else None
    return current, previous, pending


def describe(env: BootEnv, booted: str) -> dict:
    """The slots for status.json and ``posswarm status``: which runs, which is tried, the last verdict."""
    s = env.slots[booted]
    if env.trial == booted:
        boot = TRIAL
    elif env.outcome in (CONFIRMED, FELL_BACK, REJECTED):
        boot = env.outcome
    else:
        boot = "confirmed" if booted == env.primary else "unconfirmed"
    return {
        "booted": booted, "primary": env.primary, "name": s.name, "version": s.version, "boot": boot,
        "reason": env.reason, "trial": env.trial, "tries_left": env.tries,
        "slots": {i: {"name": x.name, "version": x.version, "state": x.state} for i, x in env.slots.items()},
    }
