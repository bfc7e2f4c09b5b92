"""TLS between enrolled nodes: both sides show their node certificate; who they are comes from it alone.

A store peer's connection (gossip, the cache's store catalog) is mutual TLS 1.3 with the node
credentials central issued. The handshake proves the peer holds the key of a certificate the
enrolment authority signed; :func:`peer_identity` then reads who it is (store, role, node id) from
that certificate — never from anything the peer says afterwards. Host names are not checked: nodes
are found by address (mDNS, seeds), and the identity that matters is the certified node.
"""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path

from posswarm.identity.certificate import CertifiedNode, IdentityError, verify
from posswarm.identity.credential import Credential


def peer_context(credential: Credential, *, server: bool) -> ssl.SSLContext:
    """A TLS 1.3 context presenting this node's certificate and requiring the peer's, under the same authority."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(credential.certificate_path, credential.key_path)
    context.load_verify_locations(cafile=str(credential.authority_path))
    return context


def central_context(authority: Path) -> ssl.SSLContext:
    """Verify central's HTTPS: its certificate must chain to ``authority`` and name the host the URL names."""
    try:
        context = ssl.create_default_context(cafile=str(authority))
    except (OSError, ssl.SSLError) as exc:
        raise IdentityError(f"central TLS authority {authority}: cannot load it ({exc}); point central.tls_ca at "
                            "central's CA certificate (the node credential's authority.crt by default)") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def tracker_context(credential: Credential, authority: Path) -> ssl.SSLContext:
    """Announce to central's tracker: verify it as central (``authority``, its host name) and show this node's
    certificate, which is all the tracker believes about who announces."""
    context = central_context(authority)
    context.load_cert_chain(credential.certificate_path, credential.key_path)
    return context


def peer_identity(ssl_object, credential: Credential, *,
                  now: datetime.datetime) -> CertifiedNode:
    """Who the other end of a finished handshake (an SSLObject, or a trio.SSLStream) is, checked again under the root's enrolment keys,
    bound to this node's store and not revoked by central; an IdentityError naming why not."""
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        raise IdentityError("store peer: showed no node certificate")
    peer = verify(der, list(credential.authorities), now=now)
    if peer.store != credential.identity.store:
        raise IdentityError(f"store peer {peer.node_id}: certified for store {peer.store}, not ours "
                            f"({credential.identity.store})")
    if (why := credential.revoked.is_revoked(peer)) is not None:
        raise IdentityError(f"store peer {why}")
    return peer
