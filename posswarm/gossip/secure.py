"""Gossip connections' mutual TLS 1.3: the handshake either way, then who the peer is, from its certificate alone
(a trio driver).

Both ends show the node certificate central's enrolment key issued them. A connection whose peer shows
none, one of another authority, another store's, or an expired one is refused right after the handshake;
nothing it sends is read. The store key of gossip v1 is gone: it sat on every till, so it proved only
"some node of this store", which a stolen till could claim for any of them.
"""

from __future__ import annotations

import datetime
import math
import ssl
from dataclasses import dataclass

import trio

from posswarm.errors import PosswarmError
from posswarm.identity.certificate import CertifiedNode, IdentityError
from posswarm.identity.credential import Credential
from posswarm.identity.tls import peer_context, peer_identity


class Refused(PosswarmError):
    """A peer that did not prove itself a node of our store; ``reason`` is the counter it goes under."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class Link:
    """A finished handshake: the encrypted stream and the certified node at its other end."""

    stream: trio.SSLStream
    peer: CertifiedNode


class Contexts:
    """This node's TLS contexts, built once from its credential (they read the key and certificates from disk)."""

    def __init__(self, credential: Credential) -> None:
        self.credential = credential
        self.server = peer_context(credential, server=True)
        self.client = peer_context(credential, server=False)


async def handshake(tcp: trio.SocketStream, contexts: Contexts, *, server: bool) -> Link:
    """TLS over ``tcp`` and the peer's identity; Refused if it is not a certified node of our store.

    The caller bounds the time (a peer that never speaks must not hold a slot).
    """
    stream = trio.SSLStream(tcp, contexts.server if server else contexts.client, server_side=server)
    try:
        await stream.do_handshake()
    except trio.BrokenResourceError as exc:
        await close(tcp)
        cause = exc.__cause__
        why = _ssl_reason(cause) if isinstance(cause, ssl.SSLError) else "connection closed during the TLS handshake"
        raise Refused("tls", f"TLS handshake failed: {why}") from None
    try:
        peer = peer_identity(stream, contexts.credential, now=datetime.datetime.now(datetime.UTC))
    except IdentityError as exc:
        await close(stream)  # nothing it sends is read
        raise Refused("certificate", str(exc)) from None
    return Link(stream, peer)


async def dial(address: str, port: int, contexts: Contexts, *, local: str | None, connect_s: float,
               handshake_s: float) -> Link | None:
    """A TLS connection to ``address:port``; None when nothing answers in time, Refused when what answers is not a
    certified node of our store."""
    try:
        with trio.fail_after(connect_s):
            tcp = await trio.open_tcp_stream(address, port, local_address=local)
    except (OSError, trio.TooSlowError):
        return None
    try:
        with trio.fail_after(handshake_s):
            return await handshake(tcp, contexts, server=False)
    except (trio.TooSlowError, OSError):
        await close(tcp)
        return None


class RefusalLog:
    """One ``event`` warning per refused peer (an address, or a node and what it sent) per REFUSAL_LOG_S at most:
    a stream of refusals is counted, not written out line by line."""

    REFUSAL_LOG_S = 60.0
    MAX_KEYS = 1024

    def __init__(self, log, event: str = "gossip.refused") -> None:
        self._log, self._event = log, event
        self._when: dict[str, float] = {}

    def note(self, key: str, reason: str, **fields) -> None:
        now = trio.current_time()
        if now - self._when.get(key, -math.inf) < self.REFUSAL_LOG_S:
            return
        if len(self._when) >= self.MAX_KEYS:  # bounded, whoever keeps trying
            self._when.clear()
        self._when[key] = now
        self._log.warning(self._event, peer=key, reason=reason, **fields)


def _ssl_reason(exc: ssl.SSLError) -> str:
    # OpenSSL's reason ("PEER_DID_NOT_RETURN_A_CERTIFICATE", "CERTIFICATE_VERIFY_FAILED") says it in one word.
    return (exc.reason or str(exc)).lower().replace("_", " ")[:120]


async def close(stream: trio.abc.AsyncResource) -> None:
    """Close without waiting on a peer that does not read: a second at most, even while being cancelled."""
    with trio.move_on_after(1) as scope:
        scope.shield = True
        await stream.aclose()
