"""What Varnish's own counters and log say about one image fetch: how many backend fetches, and did it stream (pure)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from posswarm.errors import PosswarmError

MAX_STATS_BYTES = 4 << 20  # varnishstat -j of the counters we ask for is a few KiB
MAX_LOG_BYTES = 64 << 20  # varnishlog -d of one benchmark run: a few hundred lines a request
MIN_REMAINING_S = 0.05  # a till asking this close to the fetch's end says nothing about streaming
COUNTERS = ("MAIN.backend_req", "MAIN.cache_miss", "MAIN.cache_hit", "MAIN.busy_sleep", "MAIN.busy_wakeup")


@dataclass
class Transaction:
    """One varnishlog transaction: client (c) or backend (b), its URL and its timestamps by name."""

    kind: str
    url: str = ""
    stamps: dict[str, float] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)


def counters(raw: bytes) -> dict[str, int]:
    """The COUNTERS from ``varnishstat -j`` output (Varnish 6.5+ nests them under "counters")."""
    if len(raw) > MAX_STATS_BYTES:
        raise PosswarmError(f"varnishstat: {len(raw)} bytes of output, more than {MAX_STATS_BYTES} (wrong -n?)")
    try:
        doc = json.loads(raw)
        found = doc.get("counters", doc)
        return {name: int(found[name]["value"]) for name in COUNTERS}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise PosswarmError(f"varnishstat: no {exc} in its JSON (is this Varnish 6.5 or later?)") from None


def transactions(raw: bytes) -> dict[int, Transaction]:
    """Parse ``varnishlog -d -g raw -i Timestamp,ReqURL,BereqURL,VCL_call``: ``vxid Tag c|b content`` lines."""
    if len(raw) > MAX_LOG_BYTES:
        raise PosswarmError(f"varnishlog: {len(raw)} bytes of output, more than {MAX_LOG_BYTES}")
    found: dict[int, Transaction] = {}
    for line in raw.decode(errors="replace").splitlines():
        parts = line.split(None, 3)
        if len(parts) < 4 or not parts[0].isdigit() or parts[2] not in ("c", "b"):
            continue  # vxid 0 session lines, blank lines
        vxid, tag, kind, content = int(parts[0]), parts[1], parts[2], parts[3]
        t = found.setdefault(vxid, Transaction(kind))
        if tag in ("ReqURL", "BereqURL"):
            t.url = content.strip()
        elif tag == "VCL_call":
            t.calls.append(content.strip())
        elif tag == "Timestamp":
            name, _, rest = content.partition(":")
            try:
                t.stamps[name.strip()] = float(rest.split()[0])
            except (IndexError, ValueError):
                raise PosswarmError(f"varnishlog: transaction {vxid}: unreadable timestamp {content[:80]!r}") from None
    return found


def judge(stats: dict[str, int], log: dict[int, Transaction], path: str) -> dict:
    """One backend fetch of ``path``, and every till that asked while it ran was served while it ran; else raise.

    Streaming means no till waits for the whole fetch: a till that asked while the body was still
    arriving must have begun receiving (its ``Process`` timestamp) within the first half of what
    remained of the fetch. Not "before the fetch ended": without streaming Varnish wakes the
    waiting tills a few microseconds before it logs the body's end.
    """
    fetches = [t for t in log.values() if t.kind == "b" and t.url == path]
    clients = [t for t in log.values() if t.kind == "c" and t.url == path]
    if stats["MAIN.backend_req"] != 1 or len(fetches) != 1:
        raise PosswarmError(f"varnish: {stats['MAIN.backend_req']} backend requests ({len(fetches)} of {path} in its "
                            "log) where one must serve every till (is request coalescing off?)")
    (fetch,) = fetches
    if "BerespBody" not in fetch.stamps or "Beresp" not in fetch.stamps:
        raise PosswarmError(f"varnish: the fetch of {path} has no body timestamp (did it fail? see varnishlog)")
    headers, body_done = fetch.stamps["Beresp"], fetch.stamps["BerespBody"]
    during, waited = [], []
    for t in clients:
        asked = max(t.stamps.get("Start", body_done), headers)
        remaining = body_done - asked
        if remaining < MIN_REMAINING_S:
            continue  # asked as the fetch ended: streaming or not looks the same
        during.append(t)
        if t.stamps.get("Process", body_done) - asked > remaining / 2:
            waited.append(t)
    if not during or waited:
        raise PosswarmError(f"varnish: {len(waited)} of {len(during)} tills that asked during the fetch of {path} "
                            "were served only after it ended (is beresp.do_stream off?)")
    first_byte = min(t.stamps["Process"] for t in during)
    return {
        "backend_fetches": 1,
        "tills_served": len(clients),
        "tills_streamed": len(during),
        "coalesced": stats["MAIN.busy_sleep"],  # requests put on the waiting list of the one fetch
        "hits": stats["MAIN.cache_hit"],
        "misses": stats["MAIN.cache_miss"],
        "fetch_s": round(body_done - fetch.stamps["Start"], 3),
        "first_delivery_before_fetch_end_s": round(body_done - first_byte, 3),
        "fetch_start": fetch.stamps["Start"],
        "fetch_end": body_done,
    }
