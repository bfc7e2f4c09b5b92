"""The trio driver of one libtorrent session: add/remove releases, feed peers, count bytes, publish events."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterable

import libtorrent as lt
import trio

from posswarm import logs
from posswarm.errors import PosswarmError
from posswarm.fsync import replace_synced
from posswarm.torrent import add_params, alerts
from posswarm.torrent.add_params import RESUME_FILE
from posswarm.torrent.alerts import (  # the events are re-exported: callers need only this module
    Event,
    HashFailed,
    PeerBanned,
    PeerBlocked,
    TorrentAdded,
    TorrentChecked,
    TorrentError,
    TorrentFinished,
)
from posswarm.torrent.fanout import Subscribers
from posswarm.torrent.holdings import Holdings, Pending
from posswarm.torrent.progress import Progress, progress_of, sample
from posswarm.torrent.settings import (
    SessionConfig,
    ip_filter_rules,
    peer_class_rules,
    session_settings,
    wan_cap_settings,
    wan_peer_class,
)

__all__ = [
    "Event", "HashFailed", "PeerBanned", "PeerBlocked", "Progress", "RESUME_FILE",
    "SessionConfig", "TorrentAdded", "TorrentChecked", "TorrentError", "TorrentFinished", "TorrentSession",
]

log = logs.get("torrent")

POLL_INTERVAL = 0.5  # per-connection counters vanish with the connection: poll often, bank the last
LISTEN_TIMEOUT = 10.0
FLUSH_TIMEOUT = 60.0


def _filter(rules: list[tuple[str, str, int]]):
    f = lt.ip_filter()
    for first, last, flags in rules:
        f.add_rule(first, last, flags)
    return f


class TorrentSession:
    """One node's libtorrent session, driven from trio.

    Events: every channel from ``subscribe()`` receives every event published after it was made
    (TorrentAdded, TorrentChecked, TorrentFinished, TorrentError, HashFailed, PeerBanned, PeerBlocked),
    in order. A subscriber that falls ``buffer`` events behind loses the newest ones (logged), so a
    slow reader never stalls libtorrent. Channels close when ``run`` ends.
    """

    def __init__(self, config: SessionConfig):
        self.config = config
        self.listen_port = 0
        self._ses = None
        self._wan_class = None
        self._was_capped = config.download_limit_wan > 0  # ever capped: socket buffers no longer autotune
        self._held = Holdings(config.lan_network)
        self._torrents = self._held.torrents  # key -> Held
        self._keys = self._held.keys  # ident -> key
        self._subscribers = Subscribers()
        self._refresh_lock = trio.Lock()
        self._listening = trio.Event()
        self._listen_error: str | None = None
        self._ordered_send, self._ordered_receive = trio.open_memory_channel(math.inf)

    # --- running -----------------------------------------------------------------------

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Open the session, pump its alerts and poll its counters until cancelled; started(self) once listening."""
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        os.set_blocking(write_fd, False)  # libtorrent's thread must never block on it
        try:
            self._ses = await trio.to_thread.run_sync(self._open, write_fd)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._pump, read_fd)
                with trio.move_on_after(LISTEN_TIMEOUT):
                    await self._listening.wait()
                if self._listen_error or not self.listen_port:
                    nursery.cancel_scope.cancel()  # and raise below, outside the nursery's exception group
                else:
                    nursery.start_soon(self._publish)
                    nursery.start_soon(self._poll)
                    log.info("session.listening", ip=self.config.listen_ip, port=self.listen_port)
                    task_status.started(self)
            raise PosswarmError(
                f"torrent session {self.config.listen_ip}:{self.config.listen_port}: cannot listen "
                f"({self._listen_error or 'no listen_succeeded_alert'}; is the address local and the port free?)"
            )
        finally:
            with trio.CancelScope(shield=True):
                await self._close()
            os.close(read_fd)
            os.close(write_fd)

    def _open(self, write_fd: int):
        config = self.config
        try:
            ses = lt.session(lt.session_params(session_settings(config)))
        except (RuntimeError, KeyError) as e:
            raise PosswarmError(f"torrent session {config.listen_ip}: libtorrent refused the settings ({e})") from None
        # an fd, not set_alert_notify: a Python callback on libtorrent's thread deadlocks
        ses.set_alert_fd(write_fd)
        wan = self._wan_class = ses.create_peer_class("wan")
        ses.set_peer_class(wan, wan_peer_class(config))
        ses.set_peer_class_filter(_filter(peer_class_rules(config, wan)))
        blocked = ip_filter_rules(config)
        if blocked:
            ses.set_ip_filter(_filter(blocked))
        return ses

    async def _close(self) -> None:
        self._held.close()
        self._subscribers.close()
        ses, self._ses = self._ses, None
        if ses is None:
            return
        box = [ses]
        del ses

        def drop() -> None:
            # the destructor joins libtorrent's threads; run it here, not on trio's thread
            box.pop()

        await trio.to_thread.run_sync(drop)
        log.info("session.closed", ip=self.config.listen_ip, port=self.listen_port)

    async def _pump(self, read_fd: int) -> None:
        # libtorrent writes one byte when its queue goes empty -> non-empty, so always drain fully
        while True:
            for alert in self._ses.pop_alerts():
                fact = alerts.translate(alert, self._keys.get)
                if fact is not None:
                    self._on(fact)
            await trio.lowlevel.wait_readable(read_fd)
            try:
                while os.read(read_fd, 4096):
                    pass
            except BlockingIOError:
                pass

    def _on(self, fact) -> None:
        """Act on one translated alert, right away and without awaiting (runs in the pump)."""
        match fact:
            case alerts.Listening(port=port):
                if not self.listen_port:
                    self.listen_port = port
                self._listening.set()
            case alerts.ListenFailed(address=address, reason=reason):
                log.warning("session.listen_failed", address=address, reason=reason)
                if not self._listening.is_set():
                    self._listen_error = f"{address}: {reason}"
                    self._listening.set()
            case alerts.AddDone(ident=ident, handle=handle, error=error):
                if (key := self._held.added(ident, handle, error)) is not None:
                    self._ordered_send.send_nowait(TorrentAdded(key))
            case alerts.Removed(ident=ident):
                self._held.removed(ident)
            case alerts.Deleted(ident=ident, error=error):
                self._held.deleted(ident, error)
            case alerts.Flushed(key=key):
                self._held.flushed(key)
            case alerts.AlertsDropped():
                log.warning("session.alerts_dropped", ip=self.config.listen_ip)
            case _:
                self._ordered_send.send_nowait(fact)

    async def _publish(self) -> None:
        """Publish events in alert order; refresh a torrent's numbers first where the event is about them."""
        async for fact in self._ordered_receive:
            match fact:
                case alerts.Checked(key=key):
                    await self.refresh([key])
                    torrent = self._torrents.get(key)
                    if torrent is None or torrent.status is None:
                        continue
                    self._subscribers.send(TorrentChecked(key, torrent.status.done_bytes))
                    if torrent.status.is_finished:
                        await self._finish(key)
                    elif not torrent.status.num_peers:  # (a pause would drop it)
                        add_params.connect_now(torrent.handle)
                case alerts.Completed(key=key):
                    await self._finish(key)
                case alerts.ResumeData(key=key, data=data):
                    torrent = self._torrents.get(key)
                    try:  # a full disk must not end the node: without it, libtorrent checks the files at the next start
                        if torrent is not None and torrent.finished:
                            await trio.to_thread.run_sync(replace_synced, torrent.save_path / RESUME_FILE, data)
                    except OSError as exc:
                        log.warning("torrent.resume_unsaved", key=key, reason=exc.strerror)
                case _:
                    if isinstance(fact, alerts.TorrentError):
                        log.warning("torrent.error", key=fact.key, reason=fact.reason)
                    self._subscribers.send(fact)

    async def _finish(self, key: str) -> None:
        torrent = self._torrents.get(key)
        if torrent is None or torrent.finished:
            return
        torrent.finished = True
        # libtorrent 2.1 verifies pieces from memory and may not have written them yet: whoever
        # reads the chunks on TorrentFinished must find them on disk
        try:
            torrent.handle.flush_cache()
        except (AttributeError, RuntimeError):  # removed, or the session is closing
            torrent.flushed.set()
        with trio.move_on_after(FLUSH_TIMEOUT) as flush:
            await torrent.flushed.wait()
        if flush.cancelled_caught:
            log.warning("torrent.flush_timeout", key=key, seconds=FLUSH_TIMEOUT)
        await self.refresh([key])  # the last poll: bytes of connections that close at the end count too
        totals = torrent.tally.totals()
        log.info("torrent.finished", key=key, lan=totals.lan, wan=totals.wan, web=totals.web)
        try:
            torrent.handle.save_resume_data(lt.torrent_handle.save_info_dict)
        except (AttributeError, RuntimeError):  # removed meanwhile
            pass
        self._subscribers.send(TorrentFinished(key))

    async def _poll(self) -> None:
        while True:
            await trio.sleep(POLL_INTERVAL)
            await self.refresh()

    async def refresh(self, keys: Iterable[str] | None = None) -> None:
        """Poll status and byte counters now (of every torrent by default) instead of at the next tick."""
        # one refresh at a time, so samples are banked in the order they were taken
        keys = list(self._torrents) if keys is None else list(keys)
        async with self._refresh_lock:
            handles = [(k, t.handle) for k in keys if (t := self._torrents.get(k)) and t.handle is not None]
            if not handles:
                return
            sampled = await trio.to_thread.run_sync(sample, handles)
            for key, (status, samples) in sampled.items():
                torrent = self._torrents.get(key)
                if torrent is not None:
                    torrent.status = status
                    torrent.tally.observe(samples, status.payload)

    # --- the API the node calls ----------------------------------------------------------

    def subscribe(self, buffer: int = 1000) -> trio.MemoryReceiveChannel:
        """A channel of every event published from now on (see the class docstring)."""
        return self._subscribers.subscribe(buffer)

    async def add(
        self, key: str, torrent: bytes, save_path: Path, *, peers: Iterable[tuple[str, int]] = (),
        web_seeds: Iterable[str] = (), super_seed: bool = False, verified: bool = False,
    ) -> None:
        """Add a torrent under ``key``, return once libtorrent has it; again with the same torrent: connect ``peers``.

        What is on disk is checked first unless ``verified`` (the caller just checked every file against a manifest)."""
        ses = self._running(key)
        atp = add_params.load(key, torrent)
        ident = add_params.ident(atp)
        adding = self._held.adding
        if self._keys.get(ident) == key:  # added, or being added, already
            if ident in adding:
                await adding[ident].event.wait()
            if key not in self._torrents:
                raise PosswarmError(f"torrent {key}: an earlier add of it failed (see the log); try again")
            for peer in peers:
                self.connect_peer(peer, key)
            return
        self._held.check_new(key, ident)
        atp = add_params.prepare(atp, Path(save_path), key, peers=peers, web_seeds=web_seeds, super_seed=super_seed,
                                  verified=verified)
        self._keys[ident] = key
        pending = adding[ident] = Pending(save_path=Path(save_path))
        try:
            ses.async_add_torrent(atp)
            await pending.event.wait()
        finally:
            del adding[ident]
        if pending.error is not None or key not in self._torrents:
            del self._keys[ident]
            raise PosswarmError(
                f"torrent {key}: libtorrent could not add it ({pending.error or 'unknown reason'}); "
                f"check that {save_path} is writable"
            )
        await self.refresh([key])
        log.info("torrent.added", key=key, save_path=str(save_path))

    def read_piece(self, key: str, piece: int) -> None:
        """Ask for a verified piece's bytes, answered by a PieceRead event (libtorrent may not have written it yet)."""
        if (torrent := self._torrents.get(key)) is not None and torrent.handle is not None:  # not removed meanwhile
            torrent.handle.read_piece(piece)

    def connect_peer(self, addr: tuple[str, int], key: str | None = None) -> None:
        """Ask libtorrent to connect to a peer for one torrent, or for every torrent; a bad address is dropped."""
        endpoint = add_params.peer_endpoint(addr)
        if endpoint is None:
            return
        torrents = self._torrents.values() if key is None else [t for t in [self._torrents.get(key)] if t]
        for torrent in torrents:
            try:
                torrent.handle.connect_peer(endpoint)
            except (AttributeError, RuntimeError):  # removed meanwhile, or the session is closing
                pass

    async def remove(self, key: str, *, delete_files: bool = False) -> None:
        """Take a torrent out of the session (and delete its files if asked); unknown keys are a no-op."""
        ses = self._running(key)
        torrent = self._torrents.get(key)
        if torrent is None:
            return
        await self.refresh([key])
        del self._torrents[key]
        torrent.tally.close()
        torrent.flushed.set()  # a finish in progress need not wait for it
        removing = self._held.removing
        pending = removing[torrent.ident] = Pending(delete_files=delete_files)
        try:
            flags = lt.session.delete_files if delete_files else 0
            try:
                ses.remove_torrent(torrent.handle, flags)
            except RuntimeError:  # libtorrent no longer has it
                return
            await pending.event.wait()
        finally:
            del removing[torrent.ident]
            self._keys.pop(torrent.ident, None)
        if pending.error is not None:
            raise PosswarmError(f"torrent {key}: removal did not complete ({pending.error}); delete its files by hand")
        log.info("torrent.removed", key=key, deleted=delete_files)

    def progress(self, key: str) -> Progress:
        """The latest numbers for a torrent (refreshed every POLL_INTERVAL and before each event)."""
        torrent = self._torrents.get(key)
        if torrent is None:
            raise PosswarmError(f"torrent {key}: not in this session (was it added, or already removed?)")
        return progress_of(key, torrent.status, torrent.tally.totals())

    def keys(self) -> list[str]:
        return list(self._torrents)

    async def set_wan_limits(self, download_bps: int, upload_bps: int) -> None:
        """Cap traffic with peers outside the store LAN (0 = none); LAN peers are never capped."""
        ses = self._running("wan limits")
        limits = {"label": "wan", "download_limit": download_bps, "upload_limit": upload_bps}
        await trio.to_thread.run_sync(ses.set_peer_class, self._wan_class, limits)  # waits on libtorrent's thread
        # a cap is kept by reading slowly, in small and even reads (posswarm/torrent/settings.py says how)
        capped = wan_cap_settings(download_bps, was_capped=self._was_capped)
        self._was_capped = self._was_capped or download_bps > 0
        await trio.to_thread.run_sync(ses.apply_settings, capped)

    async def wan_limits(self) -> tuple[int, int]:
        """(download, upload) bytes/s caps libtorrent applies to WAN peers now (0 = none)."""
        ses = self._running("wan limits")
        info = await trio.to_thread.run_sync(ses.get_peer_class, self._wan_class)
        return int(info["download_limit"]), int(info["upload_limit"])

    def add_web_seeds(self, key: str, urls: Iterable[str]) -> None:
        """Add BEP 19 web seeds to a torrent already in the session (libtorrent ignores ones it has)."""
        torrent = self._torrents.get(key)
        if torrent is None or torrent.handle is None:
            return
        for url in urls:
            torrent.handle.add_url_seed(url)

    def resume(self, key: str) -> None:
        """Clear a torrent's error (disk full, unwritable file) and let it go on where it stopped."""
        self._running(key)
        torrent = self._torrents.get(key)
        if torrent is None:
            raise PosswarmError(f"torrent {key}: not in this session (was it added, or already removed?)")
        torrent.finished = False
        torrent.flushed = trio.Event()
        torrent.handle.clear_error()
        torrent.handle.resume()

    def _running(self, key: str):
        if self._ses is None:
            raise PosswarmError(f"torrent {key}: the torrent session is not running (start TorrentSession.run first)")
        return self._ses
