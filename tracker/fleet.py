"""What a fleet of thousands of stores looks like in one glance: each store's state, the worst stores, the tills of one store."""

from __future__ import annotations

from tracker.stats import NO_STORE

# The order a network engineer reads them in: what needs a person first.
STATES = ("stalled", "cache absent", "downloading", "staged", "installed")
WORST = 50  # stores listed per release on the fleet page


def stores_of(release: dict) -> dict[str, dict]:
    """The stores of a release that carry a rollout (not central's seeders, not plain clients)."""
    return {key: s for key, s in release["stores"].items()
            if key != NO_STORE and (s["devices_total"] or s["cache"]["node"])}


def state_of(store: dict) -> str:
    """One state per store: a stalled till outranks a missing cache, which outranks a download still moving."""
    if store["devices_stalled"]:
        return "stalled"
    if store["cache"]["state"] == "absent":
        return "cache absent"
    if store["devices_total"] and store["devices_installed"] == store["devices_total"]:
        return "installed"  # the store is activated: every till runs the release, none is left staged
    if store["devices_total"] and store["devices_installed"] + store["devices_staged"] == store["devices_total"]:
        return "staged"  # every till holds it; some wait for the store's install window to switch
    return "downloading"


def overview(release: dict, *, amplification_alert: float, worst: int = WORST) -> dict:
    """Per release: stores by state, the WAN bytes the LAN saved, and the ``worst`` stores, worst first."""
    stores = stores_of(release)
    by_state = dict.fromkeys(STATES, 0)
    for s in stores.values():
        by_state[state_of(s)] += 1
    ranked = sorted(stores.items(), key=lambda item: _badness(item[0], item[1], amplification_alert))
    return {
        "by_state": by_state,
        # Every byte a till took from a neighbour on the store LAN is a byte the store's WAN did not carry.
        "wan_bytes_saved": sum(s["lan_bytes"] for s in stores.values()),
        "worst": [(key, state_of(s), s) for key, s in ranked[:worst]
                  if state_of(s) != "installed" or _over(s, amplification_alert)],
    }


def _over(store: dict, alert: float) -> bool:
    return store["wan_amplification"] is not None and store["wan_amplification"] > alert


def _badness(key: str, s: dict, alert: float) -> tuple:
    # Stalled longest first, then the WAN amplification highest, then no cache, then the least progress.
    state, over = state_of(s), _over(s, alert)
    rank = 0 if state == "stalled" else 1 if over else 1 + STATES.index(state)
    progress = s["devices_installed"] / s["devices_total"] if s["devices_total"] else 0.0
    return rank, -s["stalled_s"], -(s["wan_amplification"] or 0.0) if over else 0.0, progress, key


def store_ids(doc: dict) -> list[str]:
    """Every store id in a /stats document, sorted: what the search box matches against."""
    ids = {key for release in doc["releases"].values() for key in stores_of(release)}
    return sorted(ids | set(doc["stores"]))


def matching(ids: list[str], query: str, *, limit: int) -> list[str]:
    """The store ids containing ``query`` (case-insensitive), an exact match first, at most ``limit``."""
    wanted = query.strip().casefold()
    found = [key for key in ids if wanted in key.casefold()]
    exact = [key for key in found if key.casefold() == wanted]
    return (exact + [key for key in found if key not in exact])[:limit]


def devices_of(doc: dict, store: str) -> list[dict]:
    """One row per node of ``store`` across releases: what it installed, what it holds staged (waiting for the
    store's install window or its trial boot), what it fetches or is stalled on (with the percent it holds), its
    boot slot and the verdict on that boot, its bytes and its last announce."""
    rows: dict[str, dict] = {}
    for name, release in sorted(doc["releases"].items()):
        s = release["stores"].get(store)
        if s is None:
            continue
        size = s["size"]
        for n in s["nodes"]:
            row = rows.setdefault(n["node"], {"node": n["node"], "role": n["role"], "class": n["class"],
                                              "installed": [], "staged": [], "fetching": [], "stalled": [],
                                              "wan": 0, "lan": 0, "last_seen_s": n["last_seen_s"], "live": False,
                                              "boot": None})
            done = max(0.0, min(100.0, 100.0 * (1 - n["left"] / size))) if size else 0.0
            if n["installed"] or (n["role"] == "cache" and n["left"] == 0):  # a cache holding it all seeds it
                row["installed"].append(name)
            elif n["stalled"]:
                row["stalled"].append((name, done))
            elif n["state"] in ("staged", "boot_pending"):
                row["staged"].append((name, n["state"]))
            elif n["left"] > 0 and not n["stopped"]:
                row["fetching"].append((name, done))
            row["wan"] += n["wan"]
            row["lan"] += n["lan"]
            row["last_seen_s"] = min(row["last_seen_s"], n["last_seen_s"])
            row["live"] = row["live"] or n["live"]
            if n["slot"] is not None:  # a till's boot is one fact, whichever release's announce carried it
                row["boot"] = (n["slot"], n["boot"], n["boot_reason"] or "")
    # The cache first, then the tills in the order a stuck one matters most.
    return sorted(rows.values(), key=lambda r: (r["role"] != "cache", not r["stalled"], not r["fetching"], r["node"]))
