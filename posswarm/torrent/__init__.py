"""The libtorrent side of a node: a trio-driven session, its settings, alert events and byte accounting."""

from __future__ import annotations

import importlib

# Exports load lazily, so importing the pure modules (settings, accounting) never pulls in
# libtorrent or trio.
_EXPORTS = {
    "TorrentSession": "posswarm.torrent.session",
    "Progress": "posswarm.torrent.session",
    "SessionConfig": "posswarm.torrent.settings",
    "TorrentAdded": "posswarm.torrent.alerts",
    "TorrentChecked": "posswarm.torrent.alerts",
    "TorrentFinished": "posswarm.torrent.alerts",
    "TorrentError": "posswarm.torrent.alerts",
    "HashFailed": "posswarm.torrent.alerts",
    "PeerBanned": "posswarm.torrent.alerts",
    "PeerBlocked": "posswarm.torrent.alerts",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
