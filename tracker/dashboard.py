"""The HTML dashboard at ``/``: per-store progress bars, stragglers and WAN amplification, from the /stats document."""

from __future__ import annotations

from html import escape

REFRESH_SECONDS = 10

_STYLE = """
body { font: 14px system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.3em; } h2 { font-size: 1.1em; margin-top: 1.5em; }
table { border-collapse: collapse; } td, th { padding: 3px 10px; text-align: left; border-bottom: 1px solid #ddd; }
.bar { width: 220px; height: 14px; background: #eee; border-radius: 3px; overflow: hidden; display: inline-block; }
.fill { display: block; height: 100%; background: #2e8b57; }
.stalled { color: #b22222; font-weight: bold; } .over { color: #b22222; font-weight: bold; }
.empty { color: #777; }
"""


def render(doc: dict, *, amplification_alert: float = 1.5) -> str:
    """A self-contained page (no scripts, no external assets) that reloads itself every REFRESH_SECONDS."""
    body = [f"<h1>posswarm rollout</h1><p class=empty>refreshes every {REFRESH_SECONDS} s</p>"]
    if not doc["releases"]:
        body.append("<p class=empty>no release announced yet</p>")
    for name, release in doc["releases"].items():
        body.append(_release(name, release, amplification_alert))
    return (
        "<!doctype html><html><head><meta charset=utf-8>"
        f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">'
        f"<title>posswarm rollout</title><style>{_STYLE}</style></head><body>"
        + "".join(body)
        + "</body></html>"
    )


def _release(name: str, r: dict, alert: float) -> str:
    amp = r["wan_amplification"]
    rows = []
    for store, s in r["stores"].items():
        if store == "-" and not s["devices_total"]:
            continue  # central seeders and plain clients: no store rollout to show
        total, installed = s["devices_total"], s["devices_installed"]
        percent = 100 * installed / total if total else 0
        stragglers = ", ".join(escape(n) for n in s["stragglers"]) or "&ndash;"
        rows.append(
            f'<tr data-store="{escape(store)}"><td>{escape(store)}</td>'
            f'<td><span class=bar title="{percent:.0f} %"><span class=fill style="width:{percent:.1f}%"></span></span>'
            f" {installed}/{total}</td>"
            f"<td>{escape(s['cache']['state'])}</td><td>{s['devices_downloading']}</td>"
            f"<td{' class=stalled' if s['devices_stalled'] else ''}>{s['devices_stalled']}</td>"
            f"<td>{stragglers}</td><td>{_amp(s['wan_amplification'], alert)}</td></tr>"
        )
    header = (
        f"<h2>{escape(name)}</h2><p>{r['devices_installed']}/{r['devices_total']} devices installed in "
        f"{r['stores_total']} stores; WAN amplification {_amp(amp, alert)}</p>"
    )
    table = (
        "<table><tr><th>store</th><th>installed</th><th>cache</th><th>fetching</th><th>stalled</th>"
        "<th>stragglers</th><th>WAN&times;</th></tr>" + "".join(rows) + "</table>"
    )
    return header + table


def _amp(value: float | None, alert: float) -> str:
    if value is None:
        return "&ndash;"
    return f"<span class=over>{value:.2f}</span>" if value > alert else f"{value:.2f}"
