"""Who a TLS client is, from its verified node certificate, and the announce that identity may make (pure).

The TLS handshake (tracker/http_server.py) proves the client holds the key of a certificate under
``node_ca``; :meth:`NodeAuthority.admit` is the one place such an identity is admitted, and
:func:`attributed` the rule for what it may announce: node id, store, role and class come from the
certificate, never from the query, and a query that contradicts them is refused. A device's
certificate thus can never be handed other stores' peers, be a seeder, or move another node's record.
A certificate central has revoked (its signed list, followed by tracker/central_trust.py) is not admitted.
"""

from __future__ import annotations

import dataclasses
import datetime

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from posswarm.errors import PosswarmError
from posswarm.identity.certificate import CertifiedNode, IdentityError, verify
from posswarm.identity.revocations import RevokedNodes
from tracker.announce import Announce, BadRequest
from tracker.isolation import CENTRAL


class NodeAuthority:
    """The enrolment authorities node certificates are checked under (``node_ca``: one or more PEM certificates)."""

    MAX_BYTES = 64 * 1024  # a handful of enrolment CA certificates (a rotation keeps the old one a while)

    def __init__(self, pem: bytes, *, source: str = "node_ca") -> None:
        if len(pem) > self.MAX_BYTES:
            raise PosswarmError(f"tracker config {source}: {len(pem)} bytes, over {self.MAX_BYTES}; not a CA "
                                "certificate file (give central's KEYS/enrolment-ca.crt)")
        try:
            certificates = x509.load_pem_x509_certificates(pem)
        except ValueError as exc:
            raise PosswarmError(f"tracker config {source}: no PEM certificate in it ({exc}); give central's "
                                "KEYS/enrolment-ca.crt") from None
        keys = [c.public_key() for c in certificates]
        if not all(isinstance(k, Ed25519PublicKey) for k in keys):
            raise PosswarmError(f"tracker config {source}: not an enrolment authority (its key is not Ed25519); "
                                "give central's KEYS/enrolment-ca.crt")
        self.keys: list[Ed25519PublicKey] = keys
        # Central's revocation list; tracker/central_trust.py replaces its entries in place on each verified refresh.
        self.revoked = RevokedNodes()

    def admit(self, der: bytes, now: float) -> CertifiedNode:
        """The identity a client's certificate (DER, as the handshake verified it) is admitted as; IdentityError
        naming why not (expired, not a node, revoked by central)."""
        node = verify(der, self.keys, now=datetime.datetime.fromtimestamp(now, datetime.UTC))
        self.still_admitted(node)
        return node

    def still_admitted(self, node: CertifiedNode) -> CertifiedNode:
        """``node`` if central has not revoked it since; IdentityError with the list's reason. Each request on a
        kept-alive connection passes here, so a revocation also ends a connection admitted before it."""
        reason = self.revoked.is_revoked(node)
        if reason is not None:
            raise IdentityError(reason)
        return node


def refused(node: CertifiedNode, reason: str) -> BadRequest:
    return BadRequest(f"announce from node {node.node_id} of store {node.store}: {reason}")


def attributed(a: Announce, node: CertifiedNode) -> Announce:
    """``a`` as its certificate says who sent it; BadRequest when the query claims another node, store or role."""
    if node.store == CENTRAL:  # the tracker's name for central's seeders: no store's node may be placed there
        raise refused(node, f"store id {CENTRAL!r} is central's own; enrol the node under its store's id")
    for key, claimed, certified in (("node", a.node, node.node_id), ("store", a.store, node.store),
                                    ("role", a.role, node.role)):
        if claimed is not None and claimed != certified:
            raise refused(node, f"{key}={claimed} is not the certificate's {key} {certified}")
    # The class a node's configuration names may differ from its enrolment's: the certificate's is the one kept.
    return dataclasses.replace(a, node=node.node_id, store=node.store, role=node.role,
                               device_class=node.device_class, certified=True)


def caches_store(claimed: str | None, node: CertifiedNode) -> str:
    """The store whose caches a certified node may be told of: its own; BadRequest for another."""
    if claimed is not None and claimed != node.store:
        raise BadRequest(f"caches request from node {node.node_id} of store {node.store}: store={claimed} is not "
                         f"the certificate's store {node.store}")
    return node.store

