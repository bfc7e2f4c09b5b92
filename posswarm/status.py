"""status.json: a node's own account of itself, rewritten atomically, read by ``posswarm status`` and the demo."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from posswarm import lifecycle
from posswarm.announce import shown_url
from posswarm.errors import PosswarmError


def write(path: Path, doc: dict) -> None:
    """Replace ``path`` atomically so a reader never sees half a document."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True))
    os.replace(tmp, path)  # no fsync: it is rewritten every second and only describes the node


def read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise PosswarmError(f"status {path}: not there yet (is the node running with that data_dir?)") from None
    except (OSError, ValueError) as exc:
        raise PosswarmError(f"status {path}: unreadable ({exc})") from None


def releases_of(keeper, rollout_of) -> tuple[list[dict], dict[str, str]]:
    """Each release the keeper carries with its life-cycle state as lifecycle decided it, and the refused ones."""
    releases, refused = [], {}
    for key, carried in keeper.releases.items():
        r = carried.record
        if r.state is lifecycle.ReleaseState.REFUSED:
            refused[key] = r.reason or "refused"
        if r.manifest is None:
            continue
        p = keeper.progress(key)
        releases.append({
            "name": r.name, "version": r.version, "state": r.state.value, "size": r.manifest.total_size,
            "done_bytes": p.done_bytes, "wanted_bytes": p.wanted_bytes,
            "percent": round(100.0 * p.done_bytes / p.wanted_bytes, 1) if p.wanted_bytes else 100.0,
            "bytes_from_wan": p.wan_bytes + p.web_bytes, "bytes_from_lan": p.lan_bytes, "bytes_uploaded": p.upload_bytes,
            "reused_bytes": carried.reused_bytes, "peers": p.num_peers, "rollout": rollout_of(r.name, r.version),
            "learned_at": r.learned_at, "done_at": r.done_at,
            "error": None if r.state in (lifecycle.ReleaseState.INSTALLED, lifecycle.ReleaseState.SEEDING) else r.reason,
        })
    return releases, dict(sorted(refused.items()))


def node_document(node) -> dict:
    """The whole of status.json for a running ``posswarm.node.Node``."""
    c, keeper = node.config, node.keeper
    releases, refused = releases_of(keeper, node.rollout_summary)
    installed = {}
    if not c.is_cache:
        for name in sorted({r.name for r in keeper.records() if r.manifest is not None}):
            disk = keeper.installed(name)
            installed[name] = {"current": disk.current, "previous": disk.previous}
    follower, announcer = node.follower, node.announcer
    return {
        "node": c.node_id, "role": c.role, "store": c.store, "class": c.device_class, "address": c.address,
        "bt_port": node.torrents.listen_port, "http_url": node.http_url, "pid": os.getpid(),
        "peers": sorted(node.peers.peers), "releases": releases, "installed": installed, "rejected": refused,
        "wan_caps_kbps": {"download": node.wan.kbps[0], "upload": node.wan.kbps[1]},
        "catalog": {"url": follower.url, "last_ok": follower.last_ok, "error": follower.last_error},
        # Central's signed state: fresh or why not (an offline store installs nothing new), versions, refusals.
        "central_state": follower.trust.status(time.time()),
        "tracker": {
            "url": shown_url(c.tracker_url) if c.tracker_url else None,
            "last_ok": announcer.last_contact if announcer else None,
            "last_error": announcer.last_error if announcer else None,
        },
        "storedata": node.storedata.snapshot if node.storedata else None,
        "revoked": node.revoked,  # why central revoked this node's certificate (None: it has not)
        "slots": node.slots.status() if node.slots else None,  # boot slots: which runs, trial/confirmed/fell back, why
        "updated": time.time(),
    }

