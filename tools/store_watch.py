"""``posswarm-stats --store S --watch``: a live, top-like view of one store's cache and tills, with bars and sparklines."""

from __future__ import annotations

from collections import deque

from rich import box
from rich.console import Group
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from tracker import fleet
from tracker.dashboard import duration, nbytes

SPARK = "▁▂▃▄▅▆▇█"
HISTORY = 30  # rounds of each node's receive rate kept for its sparkline


class StoreWatch:
    """What one store looked like over the last rounds: fed a /stats document filtered to it and when it was read."""

    def __init__(self, store: str) -> None:
        self.store = store
        self._seen: dict[str, tuple[float, int]] = {}  # node -> (when, bytes received so far)
        self._rates: dict[str, deque[float]] = {}  # node -> bytes/s, per round

    def update(self, doc: dict, now: float) -> None:
        """Take in one round: each node's bytes received since the last round, as a rate."""
        self.doc = doc
        for d in fleet.devices_of(doc, self.store):
            received = d["wan"] + d["lan"]
            before = self._seen.get(d["node"])
            if before is not None and now > before[0]:
                rates = self._rates.setdefault(d["node"], deque(maxlen=HISTORY))
                rates.append(max(0, received - before[1]) / (now - before[0]))
            self._seen[d["node"]] = (now, received)

    def render(self) -> Group:
        releases = {name: r["stores"][self.store] for name, r in self.doc["releases"].items()
                    if self.store in r["stores"]}
        if not releases:
            return Group(Text(f"store {self.store}: no node of this store has announced to this tracker "
                              "(check the id, or whether its cache reaches central)"))
        return Group(self._header(releases), self._devices())

    def _header(self, releases: dict[str, dict]) -> Table:
        table = Table(title=f"store {self.store}", title_justify="left", box=box.SIMPLE_HEAD)
        for column in ("release", "ring", "state", "installed", "", "cache", "WAN", "LAN", "WAN×"):
            table.add_column(column, justify="right" if column in ("WAN", "LAN", "WAN×") else "left", no_wrap=True)
        for name, s in sorted(releases.items()):
            total, done = s["devices_total"], s["devices_installed"]
            state = fleet.state_of(s)
            amplification = s["wan_amplification"]
            table.add_row(
                name, s["ring"] or "-", Text(state, style=_STYLE.get(state, "")), f"{done}/{total}",
                ProgressBar(total=total or 1, completed=done, width=24), s["cache"]["state"], nbytes(s["wan_bytes"]),
                nbytes(s["lan_bytes"]),
                Text(f"{amplification:.2f}", style="bold red" if amplification > 1.5 else "")
                if amplification is not None else "-",
            )
        return table

    def _devices(self) -> Table:
        table = Table(box=box.SIMPLE_HEAD)
        for column in ("node", "role", "now", "boot slot", "progress", "receiving", "rate", "from WAN", "from LAN",
                       "last seen"):
            table.add_column(column, justify="right" if column in ("rate", "from WAN", "from LAN", "last seen")
                             else "left", no_wrap=True)
        for d in fleet.devices_of(self.doc, self.store):
            rates = self._rates.get(d["node"], ())
            moving = d["stalled"] or d["fetching"]
            done = min((percent for _, percent in moving), default=100.0)
            if d["stalled"]:
                now = Text(f"stalled on {', '.join(name for name, _ in d['stalled'])}", style="bold red")
            elif d["fetching"]:
                now = Text(f"fetching {', '.join(name for name, _ in d['fetching'])}", style="cyan")
            elif d["staged"]:
                now = Text(f"staged {', '.join(name for name, _ in d['staged'])}", style="magenta")
            else:
                done_text = "seeding" if d["role"] == "cache" else "up to date"
                now = Text(done_text if d["installed"] else "-", style="green" if d["installed"] else "")
            table.add_row(
                d["node"], d["role"], now, boot_text(d["boot"]), ProgressBar(total=100, completed=done, width=20), sparkline(rates),
                f"{nbytes(int(rates[-1]))}/s" if rates else "-", nbytes(d["wan"]), nbytes(d["lan"]),
                f"{duration(d['last_seen_s'])} ago" if d["live"] else Text(f"{duration(d['last_seen_s'])} ago",
                                                                          style="dim"),
            )
        return table


_STYLE = {"stalled": "bold red", "cache absent": "bold yellow", "downloading": "cyan", "staged": "magenta",
          "installed": "green"}


def boot_text(boot: tuple[str, str, str] | None) -> Text:
    """A till's boot slot, the verdict on its boot and, when it went back, why."""
    if boot is None:
        return Text("-")
    slot, verdict, reason = boot
    bad = verdict in ("rejected", "fell back")
    return Text(f"{slot}: {verdict}" + (f" ({reason})" if bad and reason else ""), style="bold red" if bad else "")


def sparkline(values) -> str:
    """Unicode bars of ``values`` scaled to their largest: a node's receive rate over the last rounds."""
    values = list(values)
    if not values:
        return ""
    top = max(values)
    if top <= 0:
        return SPARK[0] * len(values)
    return "".join(SPARK[min(len(SPARK) - 1, int(v / top * (len(SPARK) - 1) + 0.5))] for v in values)
