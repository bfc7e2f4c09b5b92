"""A device's catalog sources on the store LAN: HTTPS to the cache, used only when the server's certificate says it
is a cache of this device's store.

An mDNS advert (or a configured URL) only says where to connect. The check runs inside every TLS handshake
of the device's catalog clients, the worker thread's (python-tuf) and the trio one's alike, so no request
on any connection reaches a server that is not a certified cache of our store: a fake advert pointing at
a till, or at a laptop without a certificate, fails the handshake and the follower tries the next source.
"""

from __future__ import annotations

import datetime
import ssl

from posswarm import logs
from posswarm.identity.certificate import IdentityError
from posswarm.identity.credential import Credential
from posswarm.identity.tls import peer_context, peer_identity

log = logs.get("node")


class NotOurCache(ssl.SSLCertVerificationError):
    """The server is not a certified cache of our store (httpx reports it as a connect error: tried again later)."""


def cache_client_context(credential: Credential) -> ssl.SSLContext:
    """A TLS 1.3 client context whose handshake fails unless the server shows a certificate of a cache of our store."""
    context = peer_context(credential, server=False)
    refused: set[str] = set()  # a reason is logged once per process: a fake advert stays up for hours

    def refuse(tls, reason: str) -> NotOurCache:
        line = f"catalog source {tls.server_hostname or '?'}: {reason}; not used"
        if line not in refused and len(refused) < 256:
            refused.add(line)
            log.warning("catalog.source_refused", reason=line)
        return NotOurCache(line)

    def handshake(tls, finish) -> None:
        try:
            finish()
        except ssl.SSLCertVerificationError as exc:  # OpenSSL's own check: not under our enrolment authority
            raise refuse(tls, f"certificate not issued by our enrolment authority ({exc.verify_message})") from None
        try:
            peer = peer_identity(tls, credential, now=datetime.datetime.now(datetime.UTC))
        except IdentityError as exc:
            raise refuse(tls, str(exc)) from None
        if peer.role != "cache":
            raise refuse(tls, f"certificate is for {peer.describe()}, not a cache")

    class CheckedObject(ssl.SSLObject):  # what trio's SSLStream drives (the follower's client)
        def do_handshake(self) -> None:
            handshake(self, super().do_handshake)

    class CheckedSocket(ssl.SSLSocket):  # what a blocking client drives (python-tuf's, in its worker thread)
        def do_handshake(self, block: bool = False) -> None:
            handshake(self, lambda: super(CheckedSocket, self).do_handshake(block))

    context.sslobject_class = CheckedObject
    context.sslsocket_class = CheckedSocket
    return context


def cache_server_context(credential: Credential) -> ssl.SSLContext:
    """The cache's side: TLS 1.3 with its node certificate. Readers need none of their own: what the store
    catalog serves is signed by central (and the chunks travel by BitTorrent on the LAN anyway)."""
    context = peer_context(credential, server=True)
    context.verify_mode = ssl.CERT_NONE
    return context
