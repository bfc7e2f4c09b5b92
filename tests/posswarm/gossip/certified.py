"""Real node credentials for gossip tests: one enrolment authority, a certificate per node, as central issues them."""

from __future__ import annotations

import datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from posswarm.gossip.driver import StoreChannel
from posswarm.identity.certificate import CertifiedNode, authority_certificate, issue
from posswarm.identity.credential import Credential, load_credential
from seeder.enrolment import write_credential

STORE = "S042"


class Authority:
    """An enrolment key and its authority certificate; ``credential()`` enrols one node under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.key = Ed25519PrivateKey.generate()
        self.now = datetime.datetime.now(datetime.UTC)
        self.pem = authority_certificate(self.key, now=self.now - datetime.timedelta(minutes=1),
                                         lifetime=datetime.timedelta(days=30))

    def credential(self, node: str, role: str = "device", store: str = STORE, *,
                   lifetime: datetime.timedelta = datetime.timedelta(days=1)) -> Credential:
        node_key = Ed25519PrivateKey.generate()
        claims = CertifiedNode(node_id=node, store=store, role=role, device_class="cache" if role == "cache" else "pos",
                               not_after=self.now + lifetime)
        cert = issue(self.key, self.pem, node_key.public_key(), claims, now=self.now - datetime.timedelta(minutes=1))
        out = write_credential(self.root / f"{store}-{node}-{role}", node_key, cert, self.pem)
        return load_credential(out, (self.key.public_key(),), now=datetime.datetime.now(datetime.UTC))

    def channel(self, node: str, role: str = "device", store: str = STORE, *, address: str = "127.0.0.1",
                **kw) -> StoreChannel:
        return StoreChannel(credential=self.credential(node, role, store), address=address, **kw)
