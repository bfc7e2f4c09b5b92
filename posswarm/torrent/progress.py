"""One torrent's numbers: status and per-connection counters copied out of libtorrent, shown as Progress."""

from __future__ import annotations

from dataclasses import dataclass

import libtorrent as lt

from posswarm.torrent.accounting import PeerSample, SourceTotals

_WEB_SEED = lt.peer_info.web_seed | lt.peer_info.http_seed
_STATES = {
    "queued_for_checking": "checking",
    "checking_files": "checking",
    "checking_resume_data": "checking",
    "downloading_metadata": "downloading",
    "downloading": "downloading",
    "finished": "finished",
    "seeding": "seeding",
    "allocating": "allocating",
}


@dataclass(frozen=True)
class Progress:
    """Where one torrent stands. Byte counts are payload; wan/lan/web split what was received by source
    (web seeds crossed the WAN as well, so WAN traffic is wan_bytes + web_bytes)."""

    key: str
    state: str  # adding | checking | downloading | finished | seeding | error
    done_bytes: int = 0  # wanted bytes verified
    wanted_bytes: int = 0
    is_finished: bool = False
    num_peers: int = 0
    wan_bytes: int = 0
    lan_bytes: int = 0
    web_bytes: int = 0
    upload_bytes: int = 0
    upload_lan_bytes: int = 0
    error: str | None = None


@dataclass(frozen=True)
class Status:
    """The fields of a torrent_status we keep, copied out in the worker thread."""

    state: str
    done_bytes: int
    wanted_bytes: int
    is_finished: bool
    num_peers: int
    error: str | None
    payload: tuple[int, int] = (0, 0)  # (received, sent) payload bytes since the torrent was added, all connections


ADDING = Status("adding", 0, 0, False, 0, None)  # before the first poll of a torrent


def sample(handles: list[tuple[str, object]]) -> dict[str, tuple[Status, list[PeerSample]]]:
    """Read status and peer counters of some torrents (blocking libtorrent calls: run in a worker thread)."""
    out = {}
    for key, handle in handles:
        try:
            st = handle.status()
            peers = handle.get_peer_info()
        except RuntimeError:  # removed meanwhile
            continue
        error = st.errc.message() if st.errc.value() else None
        status = Status(
            state="error" if error else _STATES.get(st.state.name, st.state.name),
            done_bytes=int(st.total_wanted_done),
            wanted_bytes=int(st.total_wanted),
            is_finished=bool(st.is_finished or st.is_seeding),
            num_peers=int(st.num_peers),
            error=error,
            payload=(int(st.total_payload_download), int(st.total_payload_upload)),
        )
        samples = [
            PeerSample(
                remote=(str(p.ip[0]), int(p.ip[1])),
                local=(str(local[0]), int(local[1])) if (local := p.local_endpoint()) else ("", 0),
                is_web_seed=bool(p.connection_type & _WEB_SEED),
                downloaded=int(p.total_download),
                uploaded=int(p.total_upload),
            )
            for p in peers
        ]
        out[key] = (status, samples)
    return out


def progress_of(key: str, status: Status | None, totals: SourceTotals) -> Progress:
    """The Progress of one torrent from its last polled status and its banked byte totals."""
    st = status or ADDING
    return Progress(
        key=key,
        state=st.state,
        done_bytes=st.done_bytes,
        wanted_bytes=st.wanted_bytes,
        is_finished=st.is_finished,
        num_peers=st.num_peers,
        wan_bytes=totals.wan,
        lan_bytes=totals.lan,
        web_bytes=totals.web,
        upload_bytes=totals.uploaded,
        upload_lan_bytes=totals.upload_lan,
        error=st.error,
    )
