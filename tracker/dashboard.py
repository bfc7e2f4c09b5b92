"""The fleet page at ``/``: per release, progress by ring and by store state, the worst stores first, from the /stats document."""

from __future__ import annotations

from html import escape
from urllib.parse import quote

from tracker import fleet

REFRESH_SECONDS = 10
SHOWN_STRAGGLERS = 3  # node ids named per store row; the store page has them all

STYLE = """
* { box-sizing: border-box; }
body { font: 14px system-ui, sans-serif; margin: 0 auto; padding: 1em 1.5em; color: #222; max-width: 1200px; }
h1 { font-size: 1.3em; margin: 0; } h2 { font-size: 1.15em; margin: 1.6em 0 .4em; } h3 { font-size: 1em; }
header { display: flex; flex-wrap: wrap; gap: .5em 2em; align-items: center; justify-content: space-between; }
form.search input { font: inherit; padding: 4px 8px; width: 16em; max-width: 60vw; }
form.search button { font: inherit; padding: 4px 10px; }
a { color: #0b5394; }
.kpis { display: flex; flex-wrap: wrap; gap: .5em 2em; margin: .3em 0 .8em; }
.kpis b { font-size: 1.15em; }
table { border-collapse: collapse; width: 100%; table-layout: auto; }
td, th { padding: 3px 8px; text-align: left; border-bottom: 1px solid #ddd; vertical-align: top; }
th { background: #f4f4f4; font-weight: 600; }
td.num, th.num { text-align: right; white-space: nowrap; }
td.names { white-space: nowrap; }
.bar { width: 140px; height: 14px; background: #eee; border-radius: 3px; overflow: hidden; display: inline-flex;
       vertical-align: -2px; margin-right: .4em; }
td.progress { white-space: nowrap; }
@media (max-width: 900px) { .bar { width: 70px; } td, th { padding: 3px 5px; } }
.bar span { display: block; height: 100%; }
.fill, .s-installed { background: #2e8b57; } .s-downloading { background: #5b9bd5; }
.s-stalled { background: #b22222; } .s-cache-absent { background: #e69138; } .s-staged { background: #9b7fd4; }
.states { display: flex; width: 100%; height: 20px; margin: 0; }
.legend { display: flex; flex-wrap: wrap; gap: .3em 1.5em; margin: .3em 0; }
.legend i { display: inline-block; width: .9em; height: .9em; margin-right: .3em; vertical-align: -1px; }
.stalled, .over { color: #b22222; font-weight: bold; } .absent { color: #b45f06; font-weight: bold; }
.empty { color: #777; }
.wide { overflow-x: auto; }
svg.trend { display: block; width: 100%; height: 60px; background: #f7f7f7; border-bottom: 1px solid #ccc; }
svg.trend polyline { fill: none; stroke: #2e8b57; stroke-width: 2; vector-effect: non-scaling-stroke; }
"""


def page(title: str, body: str, *, refresh: bool = True) -> str:
    """A self-contained page: no scripts, no external assets; it reloads itself every REFRESH_SECONDS."""
    meta = f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">' if refresh else ""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"{meta}<title>{escape(title)}</title><style>{STYLE}</style></head><body>{body}</body></html>"
    )


def header(title: str, query: str = "") -> str:
    """The title, a link home and the store search box every page carries."""
    return (
        f'<header><h1><a href="/">posswarm</a> &middot; {escape(title)}</h1>'
        '<form class=search action="/stores" method=get role=search>'
        f'<input type=search name=q placeholder="store id, e.g. S0042" value="{escape(query)}" '
        'aria-label="store id" maxlength=128 required> <button type=submit>find store</button></form></header>'
    )


def render(doc: dict, *, trend: list[tuple[float, dict[str, tuple[int, int]]]] = (),
           amplification_alert: float = 1.5) -> str:
    """The fleet page: one section per release, however many stores, its length bounded by ``fleet.WORST``.

    ``trend`` is the rollout's progress over time: (when, {release: (devices installed, devices)}), oldest first.
    """
    body = [header("rollout"), f"<p class=empty>refreshes every {REFRESH_SECONDS} s</p>"]
    if not doc["releases"]:
        body.append("<p class=empty>no release announced yet</p>")
    for name, release in doc["releases"].items():
        points = [(at, figures[name]) for at, figures in trend if name in figures]
        body.append(_release(name, release, amplification_alert, points))
    return page("posswarm rollout", "".join(body))


def store_link(store: str) -> str:
    return f'<a href="/store/{quote(store, safe="")}">{escape(store)}</a>'


def nbytes(n: int | None) -> str:
    """Bytes as an engineer reads them (binary units, one decimal)."""
    value = float(n or 0)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def amplification(value: float | None, alert: float) -> str:
    if value is None:
        return "&ndash;"
    return f"<span class=over>{value:.2f}</span>" if value > alert else f"{value:.2f}"


def progress(done: int, total: int) -> str:
    """A table cell: a bar of ``done`` out of ``total`` and the two figures."""
    percent = 100 * done / total if total else 0
    return (f'<td class=progress><span class=bar title="{percent:.0f} %"><span class=fill style="width:{percent:.1f}%">'
            f"</span></span>{done:,}/{total:,}</td>")


def duration(seconds: float) -> str:
    """Seconds as a person on a bridge call says them: 45 s, 12 min, 3 h 20 min, 2 d 4 h."""
    s = int(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def _release(name: str, r: dict, alert: float, points: list[tuple[float, tuple[int, int]]]) -> str:
    view = fleet.overview(r, amplification_alert=alert)
    total, installed = r["devices_total"], r["devices_installed"]
    percent = 100 * installed / total if total else 0
    kpis = (
        f"<div class=kpis><span><b>{installed:,}</b>/{total:,} devices installed ({percent:.1f} %)</span>"
        f"<span><b>{r['stores_total']:,}</b> stores</span>"
        f"<span>WAN amplification <b>{amplification(r['wan_amplification'], alert)}</b></span>"
        f"<span>WAN {nbytes(r['wan_bytes'])}</span>"
        f"<span title=\"bytes the tills took from the store LAN instead of the WAN\">WAN bytes saved "
        f"<b>{nbytes(view['wan_bytes_saved'])}</b></span></div>"
    )
    return (f'<section class=release data-release="{escape(name)}"><h2>{escape(name)}</h2>{kpis}'
            + _states(view["by_state"]) + _trend(points) + _rings(r["rings"]) + _worst(view["worst"], r["stores_total"], alert)
            + "</section>")


def _states(by_state: dict[str, int]) -> str:
    stores = sum(by_state.values())
    parts, legend = [], []
    for state, count in by_state.items():
        css = "s-" + state.replace(" ", "-")
        if count:
            parts.append(f'<span class={css} style="width:{100 * count / stores:.2f}%" title="{state}: {count}"></span>')
        legend.append(f'<span data-state="{state}"><i class={css}></i>{state} <b>{count:,}</b></span>')
    return f'<h3>stores by state</h3><div class="bar states">{"".join(parts)}</div><div class=legend>{"".join(legend)}</div>'


def _trend(points: list[tuple[float, tuple[int, int]]]) -> str:
    """Devices installed over time, as an inline SVG line (no script): 0 % at the bottom, 100 % at the top."""
    if len(points) < 2:
        return ""
    start, span = points[0][0], (points[-1][0] - points[0][0]) or 1.0
    xy = " ".join(f"{1000 * (at - start) / span:.1f},{100 - (100 * done / total if total else 0):.1f}"
                  for at, (done, total) in points)
    return (f"<h3>devices installed over the last {duration(span)}</h3>"
            '<svg class=trend viewBox="0 0 1000 100" preserveAspectRatio="none" role=img '
            f'aria-label="devices installed over time"><polyline points="{xy}" /></svg>')


def _rings(rings: dict[str, dict]) -> str:
    rows = "".join(
        f'<tr data-ring="{escape(ring)}"><td>{escape(ring)}</td><td class=num>{r["stores"]:,}</td>'
        f'{progress(r["devices_installed"], r["devices_total"])}</tr>'
        for ring, r in sorted(rings.items())
    )
    return ("<h3>progress by ring</h3><table class=rings><tr><th>ring</th><th class=num>stores</th>"
            f"<th>devices installed</th></tr>{rows}</table>")


def _worst(worst: list[tuple[str, str, dict]], stores: int, alert: float) -> str:
    if not worst:
        return "<h3>stores needing attention</h3><p class=empty>none: every store installed, WAN within bounds</p>"
    rows = []
    for store, state, s in worst:
        stragglers = s["stragglers"]
        names = ", ".join(escape(n) for n in stragglers[:SHOWN_STRAGGLERS])
        if len(stragglers) > SHOWN_STRAGGLERS:
            names += f" +{len(stragglers) - SHOWN_STRAGGLERS} more"
        css = {"stalled": " class=stalled", "cache absent": " class=absent"}.get(state, "")
        stalled_for = duration(s["stalled_s"]) if s["devices_stalled"] else "&ndash;"
        rows.append(
            f'<tr data-store="{escape(store)}"><td>{store_link(store)}</td><td{css}>{state}</td>'
            f"<td class=num>{stalled_for}</td>{progress(s['devices_installed'], s['devices_total'])}"
            f"<td>{escape(s['cache']['state'])}</td><td class=num>{amplification(s['wan_amplification'], alert)}</td>"
            f"<td class=names>{names or '&ndash;'}</td></tr>"
        )
    return (
        f"<h3>stores needing attention (the worst {len(worst)} of {stores:,}, worst first)</h3><div class=wide>"
        "<table class=worst><tr><th>store</th><th>state</th><th class=num>stalled for</th><th>devices installed</th>"
        f"<th>cache</th><th class=num>WAN&times;</th><th>stragglers</th></tr>{''.join(rows)}</table></div>"
    )
