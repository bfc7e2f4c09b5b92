"""The UDP tracker (BEP 15): a trio datagram loop feeding udp_wire and the shared Desk."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable

import trio

from posswarm import logs
from posswarm.errors import PosswarmError
from tracker import udp_wire
from tracker.announce import BadRequest
from tracker.desk import Desk
from tracker.metrics import TrackerMetrics

log = logs.get("tracker")


UNPROVEN = "connection id expired or not issued to you (connect again)"


def answer_datagram(
    desk: Desk, ids: udp_wire.ConnectionIds, data: bytes, ip: str, port: int, now: float,
    metrics: TrackerMetrics | None = None,
) -> bytes | None:
    """The reply to one datagram from ``ip:port``, or None when it deserves silence.

    Until a datagram carries a connection id we issued to its address, that address may be
    spoofed: it gets nothing longer than what it sent (a connect answer is 16 bytes, as is the
    connect; an unproven announce or scrape gets an error cut to its own size), and no log line.
    """
    head = udp_wire.parse_header(data)
    if head is None:
        _dropped(metrics, "garbage")
        return None
    connection_id, action, tid = head
    if action == udp_wire.CONNECT:
        return udp_wire.encode_connect(tid, ids.issue(ip, port, now))
    if not ids.valid(connection_id, ip, port, now):
        _dropped(metrics, "unproven")
        return udp_wire.encode_error(tid, UNPROVEN, limit=len(data))
    kind = "announce" if action == udp_wire.ANNOUNCE else "scrape"
    try:
        request = udp_wire.parse_request(data, ip, max_numwant=desk.config.max_numwant)
        reply = _answer(desk, request, ip, now)
    except udp_wire.UdpBadRequest as exc:
        log.debug("udp.bad", reason=str(exc), remote=ip)  # a proven address; debug: a client may send many
        _count(metrics, kind, False)
        return udp_wire.encode_error(exc.transaction_id, str(exc))
    _count(metrics, kind, True)
    return reply


def _dropped(metrics: TrackerMetrics | None, reason: str) -> None:
    if metrics is not None:
        metrics.dropped(reason)


def _answer(desk: Desk, request: udp_wire.AnnounceRequest | udp_wire.ScrapeRequest, ip: str, now: float) -> bytes:
    tid = request.transaction_id
    try:
        if isinstance(request, udp_wire.AnnounceRequest):
            answer = desk.announce(request.announce, request.passkey, now)
            ipv6 = ":" in request.announce.ip
            return udp_wire.encode_announce(
                tid, interval=answer.interval, complete=answer.complete, incomplete=answer.incomplete,
                ipv6=ipv6, packed=answer.handed.compact()[1 if ipv6 else 0],
            )
        # BEP 15 scrapes carry no URL data, so no passkey: a private tracker refuses them here.
        files = desk.scrape(request.info_hashes, None, now, ip)
    except BadRequest as exc:
        raise udp_wire.UdpBadRequest(str(exc), tid) from None
    # BEP 15 answers every asked hash in order; an unknown torrent has all-zero counts.
    return udp_wire.encode_scrape(tid, [files.get(h, (0, 0, 0)) for h in request.info_hashes])


def _count(metrics: TrackerMetrics | None, kind: str, ok: bool) -> None:
    if metrics is not None:
        metrics.count("udp", kind, ok)


async def run(
    desk: Desk,
    host: str,
    port: int,
    clock: Callable[[], float],
    *,
    metrics: TrackerMetrics | None = None,
    secret: bytes | None = None,
    task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    """Answer datagrams until cancelled; ``task_status.started((host, port))`` once bound."""
    ids = udp_wire.ConnectionIds(secret if secret is not None else os.urandom(32))
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with trio.socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            await sock.bind((host, port))
        except OSError as exc:
            raise PosswarmError(
                f"tracker: cannot listen for UDP on {host}:{port} ({exc.strerror}); pick a free port or another address"
            ) from None
        bound = sock.getsockname()[:2]
        log.debug("listening.udp", url=f"udp://{_hostport(*bound)}")
        task_status.started(bound)
        while True:
            try:
                data, address = await sock.recvfrom(udp_wire.MAX_DATAGRAM + 1)
            except OSError:
                continue  # an ICMP error for an earlier reply: nothing to do with the next datagram
            try:
                reply = answer_datagram(desk, ids, data, address[0], address[1], clock(), metrics)
            except Exception:  # a bug of ours or a peer store outage must not end the UDP tracker
                log.exception("udp.crashed", remote=address[0])
                continue
            if reply is not None:
                try:
                    await sock.sendto(reply, address)
                except OSError as exc:
                    log.info("udp.send_failed", remote=address[0], reason=exc.strerror)


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
