"""The store page at ``/store/ID`` (its cache and tills: versions, WAN/LAN bytes, last seen) and the search results."""

from __future__ import annotations

from html import escape

from tracker import fleet
from tracker.dashboard import amplification, duration, header, nbytes, page, progress, store_link


def render(doc: dict, store: str, *, amplification_alert: float = 1.5) -> str | None:
    """The page of ``store`` from a /stats document filtered to it; None when no node of it announced."""
    releases = {name: r["stores"][store] for name, r in doc["releases"].items() if store in r["stores"]}
    if not releases:
        return None
    rows = "".join(
        f'<tr data-release="{escape(name)}"><td class=names>{escape(name)}</td><td>{escape(s["ring"] or "-")}</td>'
        f'<td>{fleet.state_of(s)}</td>{progress(s["devices_installed"], s["devices_total"])}'
        f'<td>{escape(s["cache"]["state"])}</td><td class=num>{nbytes(s["wan_bytes"])}</td>'
        f'<td class=num>{nbytes(s["lan_bytes"])}</td>'
        f'<td class=num>{amplification(s["wan_amplification"], amplification_alert)}</td></tr>'
        for name, s in sorted(releases.items())
    )
    summary = ("<h2>releases</h2><div class=wide><table class=releases><tr><th>release</th><th>ring</th><th>state</th>"
               "<th>devices installed</th><th>cache</th><th class=num>WAN</th><th class=num>LAN</th>"
               f"<th class=num>WAN&times;</th></tr>{rows}</table></div>")
    devices = fleet.devices_of(doc, store)
    return page(f"store {store}", header(f"store {store}", store) + summary + _devices(devices))


def _devices(devices: list[dict]) -> str:
    rows = []
    for d in devices:
        fetching = ", ".join(f"{escape(name)} {done:.0f} %" for name, done in d["fetching"])
        stalled = ", ".join(f"{escape(name)} at {done:.0f} %" for name, done in d["stalled"])
        staged = ", ".join(f"{escape(name)} ({'armed for a trial boot' if why == 'boot_pending' else 'waiting for its window'})"
                           for name, why in d["staged"])
        state = (f"<span class=stalled>stalled on {stalled}</span>" if stalled
                 else f"fetching {fetching}" if fetching else f"staged {staged}" if staged
                 else ("seeding" if d["role"] == "cache" else "up to date") if d["installed"] else "&ndash;")
        seen = f"{duration(d['last_seen_s'])} ago" + ("" if d["live"] else " <span class=empty>(gone)</span>")
        rows.append(
            f'<tr data-node="{escape(d["node"])}"><td>{escape(d["node"])}</td><td>{escape(d["role"])}</td>'
            f'<td>{escape(d["class"] or "-")}</td><td class=names>{"<br>".join(escape(v) for v in d["installed"]) or "&ndash;"}'
            f"</td><td>{state}</td><td>{_boot(d['boot'])}</td>"
            f"<td class=num>{nbytes(d['wan'])}</td><td class=num>{nbytes(d['lan'])}</td>"
            f"<td class=num>{seen}</td></tr>"
        )
    return (f"<h2>devices ({len(devices)})</h2><div class=wide><table class=devices><tr><th>node</th><th>role</th>"
            "<th>class</th><th>installed</th><th>now</th><th>boot slot</th><th class=num>from WAN</th>"
            "<th class=num>from LAN</th>"
            f"<th class=num>last seen</th></tr>{''.join(rows)}</table></div>")


def _boot(boot: tuple[str, str, str] | None) -> str:
    """A till's boot slot and the verdict on its boot, the reason as a tooltip; a dash for a node without slots."""
    if boot is None:
        return "&ndash;"
    slot, verdict, reason = boot
    css = " class=stalled" if verdict in ("rejected", "fell back") else ""
    title = f' title="{escape(reason)}"' if reason else ""
    return f"<span{css}{title}>{escape(slot)}: {escape(verdict)}</span>" + (f" &ndash; {escape(reason)}" if reason and css else "")


def missing(store: str) -> str:
    """The page for a store id no node announced."""
    return page(f"store {store}", header(f"store {store}", store)
                + f"<p>store {escape(store)}: no node of this store has announced to this tracker "
                "(check the id, or whether its cache reaches central)</p>", refresh=False)


def results(query: str, found: list[str], *, limit: int) -> str:
    """The stores whose id contains the query."""
    if not found:
        listing = f"<p>no store id contains {escape(query)!s} (ids are matched without regard to case)</p>"
    else:
        more = f" (the first {limit})" if len(found) >= limit else ""
        listing = (f"<p>{len(found)} stores{more}</p><ul class=found>"
                   + "".join(f"<li>{store_link(s)}</li>" for s in found) + "</ul>")
    return page("find store", header("find store", query) + listing, refresh=False)
