"""Announce every release a process carries to the tracker, now and then and whenever something changes."""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable

import httpx
import trio

from posswarm import logs
from posswarm.announce import MAX_REPLY_BYTES, NodeIdentity, ReleaseReport, announce_url, parse_reply, shown_url
from posswarm.errors import PosswarmError

log = logs.get("announcer")

MIN_INTERVAL_S = 2.0


class Announcer:
    """Owns the announce loop; ``kick()`` asks for an announce round as soon as possible.

    ``reports()`` returns the current ReleaseReports; ``on_peers(report, peers)`` receives the
    peers the tracker handed out for that release. The tracker's ``interval`` is honoured, capped
    by ``max_interval_s`` so progress stays fresh in the stats during a rollout. ``verify`` = the
    TLS context for an https:// tracker.
    """

    def __init__(
        self,
        tracker_url: str,
        who: NodeIdentity,
        reports: Callable[[], list[ReleaseReport]],
        on_peers: Callable[[ReleaseReport, tuple[tuple[str, int], ...]], None],
        *,
        max_interval_s: float = 30.0,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self.tracker_url = tracker_url
        self.who = who
        self._reports = reports
        self._on_peers = on_peers
        self._max_interval = max_interval_s
        self._verify = verify  # a node's: central's CA and its own certificate (posswarm/identity/tls.py)
        self._kicked = trio.Event()
        self._started: set[bytes] = set()
        self._completed: set[bytes] = set()
        self.last_contact: float | None = None
        self.last_error: str | None = None

    def kick(self) -> None:
        self._kicked.set()

    def keep_connection_s(self) -> float:
        """How long an idle connection to the tracker is kept: twice the longest wait between rounds, so every round
        (and one late one) reuses the certified connection instead of paying a new TLS handshake at the tracker."""
        return 2 * max(MIN_INTERVAL_S, self._max_interval)

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        limits = httpx.Limits(keepalive_expiry=self.keep_connection_s())  # httpx's default: 5 s
        async with httpx.AsyncClient(timeout=10.0, verify=self._verify, limits=limits) as client:
            task_status.started()
            try:
                while True:
                    interval = await self._round(client)
                    with trio.move_on_after(max(MIN_INTERVAL_S, min(interval, self._max_interval))):
                        await self._kicked.wait()
                    self._kicked = trio.Event()
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(2):
                    await self._stopped(client)

    async def _round(self, client: httpx.AsyncClient) -> float:
        interval = self._max_interval
        for report in self._reports():
            event = ""
            if report.info_hash_v1 not in self._started:
                event = "started"
            elif report.installed and report.info_hash_v1 not in self._completed:
                event = "completed"
            try:
                reply = await self._announce(client, report, event)
            except PosswarmError as exc:
                if self.last_error != str(exc):  # said once, not at every round
                    log.warning("announce.failed", reason=str(exc))
                self.last_error = str(exc)
                continue
            self.last_error = None
            self.last_contact = time.time()
            self._started.add(report.info_hash_v1)
            if report.installed:
                self._completed.add(report.info_hash_v1)
            interval = min(interval, reply.interval)
            self._on_peers(report, reply.peers)
        return interval

    async def _announce(self, client: httpx.AsyncClient, report: ReleaseReport, event: str):
        url = announce_url(self.tracker_url, self.who, report, event)
        shown = shown_url(self.tracker_url)  # the passkey in the URL is a secret: never in a log line
        for attempt in (1, 2):
            try:
                body = await _get_reply(client, url)
                break
            except (httpx.RemoteProtocolError, httpx.WriteError):
                # A kept connection the tracker (or the proxy in front) closed as the request went out: once more
                # on a new one, so a tracker restart costs a handshake and no failed round.
                if attempt == 2:
                    raise PosswarmError(f"tracker {shown}: closed the connection twice; will retry") from None
            except httpx.HTTPError as exc:
                raise PosswarmError(f"tracker {shown}: unreachable ({type(exc).__name__}); will retry") from None
        return parse_reply(body, tracker_url=shown)

    async def _stopped(self, client: httpx.AsyncClient) -> None:
        for report in self._reports():
            if report.info_hash_v1 in self._started:
                try:
                    await client.get(announce_url(self.tracker_url, self.who, report, "stopped"))
                except httpx.HTTPError:
                    return


async def _get_reply(client: httpx.AsyncClient, url: str) -> bytes:
    async with client.stream("GET", url) as response:
        body = bytearray()
        async for part in response.aiter_bytes():
            body += part
            if len(body) > MAX_REPLY_BYTES:  # parse_reply refuses it; read no further than that
                break
    return bytes(body)
