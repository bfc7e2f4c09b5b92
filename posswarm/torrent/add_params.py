"""The add parameters of one release's torrent: the checked .torrent, its resume data, flags, peers, web seeds."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Iterable

import libtorrent as lt

from posswarm import logs
from posswarm.errors import PosswarmError
from posswarm.torrent import alerts

log = logs.get("torrent")

#: Resume data of a *finished* torrent, in its save_path: the next start skips re-hashing the whole
#: release. Never for unfinished ones: pieces verified after the last save would be fetched again,
#: while a full check keeps every verified piece. It only checks file sizes, so the node
#: BLAKE3-checks chunks before installing and scrubs what it seeds.
RESUME_FILE = ".resume"


def load(key: str, torrent: bytes):
    """The add_torrent_params of a .torrent; one line naming the release when it is not one."""
    try:
        return lt.load_torrent_buffer(bytes(torrent))
    except RuntimeError as e:
        raise PosswarmError(f"torrent {key}: not a valid .torrent ({e}); re-fetch the release's torrent") from None


def ident(atp) -> str:
    """The info-hash string libtorrent's alerts name this torrent by."""
    return alerts.ident_of(atp.ti.info_hashes())


def prepare(atp, save_path: Path, key: str, *, peers: Iterable[tuple[str, int]], web_seeds: Iterable[str],
            super_seed: bool, verified: bool = False):
    """The parameters to add: resume data when it fits, save path, flags, first peers and web seeds."""
    atp = with_resume_data(atp, save_path, key)
    atp.save_path = str(save_path)
    # no seed_mode unless the caller has just checked every chunk; resume data only of a finished
    # release: hard-linked chunks must be checked; not auto-managed (and so not paused): the node,
    # not libtorrent's queue, decides what runs
    atp.flags &= ~(lt.torrent_flags.auto_managed | lt.torrent_flags.paused | lt.torrent_flags.seed_mode)
    if verified:
        # libtorrent then hashes each piece before its first upload instead of all of them before the
        # first peer is served (and leaves seed mode, rechecking, at the first mismatch). Central checks a
        # whole release before it seeds it; the second full hash held its first upload back 0.18 s at
        # 48 MiB (posswarm-netsim, load average 12).
        atp.flags |= lt.torrent_flags.seed_mode
    atp.flags |= lt.torrent_flags.duplicate_is_error
    atp.peers = [p for p in (peer_endpoint(p) for p in peers) if p is not None]
    atp.url_seeds = list(web_seeds)  # BEP 19; the server must answer Range
    if super_seed:  # BEP 16: hand each piece to one peer until others have it (central with cross-store)
        atp.flags |= lt.torrent_flags.super_seeding
    return atp


def with_resume_data(atp, save_path: Path, key: str):
    """The add parameters from the release's resume data when it is for this very torrent."""
    try:
        resumed = lt.read_resume_data((save_path / RESUME_FILE).read_bytes())
    except FileNotFoundError:
        return atp
    except (OSError, RuntimeError) as e:
        log.warning("torrent.resume_data_unusable", key=key, reason=str(e))
        return atp
    if resumed.ti is None or ident(resumed) != ident(atp):
        log.warning("torrent.resume_data_unusable", key=key, reason="it is for another torrent")
        return atp
    return resumed


def peer_endpoint(addr) -> tuple[str, int] | None:
    """(ip, port) libtorrent accepts, or None (logged) for anything a peer list should not have held."""
    try:
        ip, port = addr
        ip = str(ipaddress.ip_address(ip))
        port = int(port)
    except (TypeError, ValueError):
        log.info("peer.bad_address", addr=repr(addr)[:80])
        return None
    if not 0 < port < 65536:
        log.info("peer.bad_address", addr=repr(addr)[:80])
        return None
    return (ip, port)


def connect_now(handle) -> None:
    """Connect a just-checked torrent to the peers it was added with now, not at the session's next second.

    libtorrent 2.1 connects a new torrent's peers only on its once-a-second tick (a tracker response or a resume
    triggers its "connect boost"; peers given at add time or by connect_peer do not): 0-1 s, 0.5 s on average,
    of every hop's start (loopback: connected 0.5-0.97 s after add, at the session's second; after a pause and
    resume 0.03-0.07 s). Only with no connection yet, not even one being made: the pause would drop it."""
    try:
        if handle.get_peer_info():
            return
        handle.pause()
        handle.resume()
    except RuntimeError:  # removed meanwhile
        pass
