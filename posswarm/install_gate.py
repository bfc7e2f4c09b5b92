"""The rollouts a device's release keeper acts on, with the install window applied: a release the rollout lets
install waits (staged) until its ``activate`` and ``install.window`` allow it (the trio driver of
posswarm/install_window.py)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import trio

from posswarm import install_window, logs
from posswarm.config import NodeConfig
from posswarm.rollout import INSTALL, WAIT, Decision
from posswarm.rollout_store import HeldRollouts

log = logs.get("node")

#: The longest the gate sleeps between looks at the clock (a window edge is met to the second otherwise).
CHECK_EVERY_S = 20.0


class InstallGate:
    """``decision()`` as HeldRollouts gives it, INSTALL turned into WAIT while the release may not activate."""

    def __init__(self, held: HeldRollouts, config: NodeConfig) -> None:
        self.held = held
        self.windows = install_window.windows_of(config.install_window)
        self.zone = ZoneInfo(config.timezone)

    def decision(self, name: str, version: str, *, store: str, device_class: str, role: str) -> Decision | None:
        d = self.held.decision(name, version, store=store, device_class=device_class, role=role)
        if role != "device" or (d is not None and d.action != INSTALL):
            return d
        rollout = self.held.get(name, version)
        activate = rollout[0].activate_in(store) if rollout else install_window.WINDOW
        why = install_window.why_not_now(activate, self.windows, datetime.now(self.zone))
        return d if why is None else Decision(WAIT, f"release {name} {version}: {why}")

    async def run(self, keeper) -> None:
        """Tell the keeper whenever a window opens or closes, or an ``at`` time may have come."""
        while True:
            local = datetime.now(self.zone)
            wait = min(CHECK_EVERY_S, install_window.seconds_to_change(self.windows, local) + 0.5) if self.windows \
                else CHECK_EVERY_S
            await trio.sleep(wait)
            keeper.follow_rollouts()
