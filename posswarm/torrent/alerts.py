"""Turn libtorrent alerts into plain frozen events, copying every field out before the next pop_alerts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import libtorrent as lt

# --- events a subscriber of TorrentSession receives -------------------------------------


@dataclass(frozen=True)
class TorrentAdded:
    key: str


@dataclass(frozen=True)
class TorrentChecked:
    """libtorrent has checked what was already on disk (e.g. chunks hard-linked from older releases)."""

    key: str
    done_bytes: int  # wanted bytes that passed the check


@dataclass(frozen=True)
class TorrentFinished:
    """Every wanted piece is verified by libtorrent; sent once per key."""

    key: str


@dataclass(frozen=True)
class ChunkCompleted:
    """Every piece of one torrent file passed its hash check; ``name`` is the file's name (a chunk's BLAKE3 in hex).

    libtorrent may still hold the bytes in memory: a reader that finds the file short or wrong tries again later.
    """

    key: str
    name: str
    piece: int  # the one piece that holds it, or -1 when it spans several


@dataclass(frozen=True)
class PieceRead:
    """A piece's bytes, read from libtorrent's memory as ``TorrentSession.read_piece`` asked (no disk read)."""

    key: str
    piece: int
    data: bytes


@dataclass(frozen=True)
class TorrentError:
    key: str
    reason: str


@dataclass(frozen=True)
class HashFailed:
    key: str
    piece: int


@dataclass(frozen=True)
class PeerBanned:
    key: str
    ip: str


@dataclass(frozen=True)
class PeerBlocked:
    """A connection refused by the lan_only ip_filter (key is None for an incoming one not yet tied to a torrent)."""

    ip: str
    key: str | None = None


Event = (TorrentAdded | TorrentChecked | TorrentFinished | ChunkCompleted | PieceRead | TorrentError | HashFailed
         | PeerBanned | PeerBlocked)

# --- facts only the session driver acts on ----------------------------------------------


@dataclass(frozen=True)
class Listening:
    ip: str
    port: int


@dataclass(frozen=True)
class ListenFailed:
    address: str
    reason: str


@dataclass(frozen=True)
class AddDone:
    """async_add_torrent finished; handle is a copy, valid after the alert is gone."""

    ident: str
    handle: object  # lt.torrent_handle
    error: str | None


@dataclass(frozen=True)
class Checked:
    key: str


@dataclass(frozen=True)
class Completed:
    """torrent_finished_alert or a state change to finished/seeding."""

    key: str


@dataclass(frozen=True)
class Flushed:
    """Every block of the torrent received so far is written to its files."""

    key: str


@dataclass(frozen=True)
class Removed:
    ident: str


@dataclass(frozen=True)
class Deleted:
    """The files of a removed torrent are gone (error None) or could not be deleted."""

    ident: str
    error: str | None


@dataclass(frozen=True)
class AlertsDropped:
    pass


@dataclass(frozen=True)
class ResumeData:
    """libtorrent's resume data for a torrent, already bencoded (copied out of the alert)."""

    key: str
    data: bytes


Fact = (Listening | ListenFailed | AddDone | Checked | Completed | Flushed | Removed | Deleted | AlertsDropped
        | ResumeData)


def ident_of(info_hashes) -> str:
    """A torrent's identity as text (v1 and v2 info-hashes), usable after its handle is gone."""
    return f"{info_hashes.v1}:{info_hashes.v2}"


def _key(alert, key_of: Callable[[str], str | None]) -> str | None:
    try:
        return key_of(ident_of(alert.handle.info_hashes()))
    except RuntimeError:  # the torrent is already gone: its handle is invalid
        return None


def _ip(alert) -> str:
    return str(alert.ep[0])


_DONE_STATES = {lt.torrent_status.states.finished, lt.torrent_status.states.seeding}


def translate(alert, key_of: Callable[[str], str | None]) -> Event | Fact | None:
    """The event for one alert, or None if it is not one we act on. key_of maps a torrent ident to its key."""
    if isinstance(alert, lt.listen_succeeded_alert):
        if alert.socket_type.name != "tcp":
            return None
        return Listening(ip=str(alert.address), port=int(alert.port))
    if isinstance(alert, lt.listen_failed_alert):
        return ListenFailed(address=f"{alert.address}:{alert.port}", reason=alert.error.message())
    if isinstance(alert, lt.add_torrent_alert):
        params = alert.params
        hashes = params.ti.info_hashes() if params.ti is not None else params.info_hashes
        error = alert.error.message() if alert.error.value() else None
        return AddDone(ident=ident_of(hashes), handle=alert.handle, error=error)
    if isinstance(alert, lt.alerts_dropped_alert):
        return AlertsDropped()
    # the handle of a removed torrent is invalid: these carry its info-hashes instead
    if isinstance(alert, lt.torrent_removed_alert):
        return Removed(ident_of(alert.info_hashes))
    if isinstance(alert, lt.torrent_deleted_alert):
        return Deleted(ident_of(alert.info_hashes), None)
    if isinstance(alert, lt.torrent_delete_failed_alert):
        return Deleted(ident_of(alert.info_hashes), alert.error.message())
    if isinstance(alert, lt.peer_blocked_alert):
        return PeerBlocked(ip=_ip(alert), key=_key(alert, key_of))
    if not isinstance(alert, lt.torrent_alert):
        return None
    key = _key(alert, key_of)
    if key is None:
        return None
    if isinstance(alert, lt.torrent_checked_alert):
        return Checked(key)
    if isinstance(alert, lt.torrent_finished_alert):
        return Completed(key)
    if isinstance(alert, lt.cache_flushed_alert):
        return Flushed(key)
    if isinstance(alert, lt.save_resume_data_alert):
        return ResumeData(key, bytes(lt.write_resume_data_buf(alert.params)))
    if isinstance(alert, lt.state_changed_alert):
        return Completed(key) if alert.state in _DONE_STATES else None
    if isinstance(alert, lt.file_completed_alert):
        try:
            info = alert.handle.torrent_file()
            files = info.layout()  # files() is deprecated in libtorrent 2.1
            one = files.file_size(alert.index) <= info.piece_length()
            return ChunkCompleted(key, files.file_name(alert.index), files.piece_index_at_file(alert.index) if one else -1)
        except (RuntimeError, AttributeError):  # removed meanwhile: nothing to read
            return None
    if isinstance(alert, lt.read_piece_alert):
        return None if alert.error.value() else PieceRead(key, int(alert.piece), bytes(alert.buffer))
    if isinstance(alert, lt.hash_failed_alert):
        return HashFailed(key=key, piece=int(alert.piece_index))
    if isinstance(alert, lt.peer_ban_alert):
        return PeerBanned(key=key, ip=_ip(alert))
    # a failing file op posts file_error_alert and then torrent_error_alert; the second names the
    # file too, so it alone becomes the event
    if isinstance(alert, lt.torrent_error_alert):
        return TorrentError(key=key, reason=alert.message())
    return None
