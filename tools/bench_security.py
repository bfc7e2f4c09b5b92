"""``posswarm-bench security``: what the trust chain costs in CPU, one operation at a time, on posswarm's own code paths.

Every figure elsewhere is measured with security on; this one says what that security costs. Each operation
runs in this process, with no network and no disk in the timed part (TLS through memory BIOs), many times, and
is reported as CPU microseconds per operation (``time.process_time``: steadier than wall time on a shared host)
with the rate one core would sustain:

- a store peers' mutual TLS 1.3 handshake (gossip, the cache's store catalog): both ends, node certificates
  issued by central's enrolment key, the peer's certificate checked again by ``peer_identity``;
- a node's HTTPS handshake to central (``central_context`` verifying central's certificate and host name), both
  ends;
- TLS 1.3 records: bytes a second through an established connection, both ends;
- a store cache signing a batch of sales and central checking it (``batch_signature``), 200 sales a batch;
- a till checking one SKU entry's signature (``posswarm.sku.signature.problem``);
- checking one node certificate (``identity.certificate.verify``), as the seeder's ingest and every store peer do.
"""

from __future__ import annotations

import argparse
import datetime
import ssl
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import msgpack
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from posswarm.errors import PosswarmError
from posswarm.identity.certificate import verify
from posswarm.identity.credential import load_credential
from posswarm.identity.tls import central_context, peer_context, peer_identity
from posswarm.keys import KeyRing
from posswarm.sales import batch_signature
from posswarm.sales.model import Line, Sale, Tender
from posswarm.sku import signature as sku_signature
from posswarm.sku.entry import SkuEntry
from seeder.keys_cli import init_keys
from tools.bench import print_result

STORE = "S0042"
BATCH = 200  # sales a cache forwards in one batch (posswarm/storedata/cache.py's FORWARD_BATCH order of magnitude)
RECORD_BYTES = 1 << 20


def _per_op(run: Callable[[], None], rounds: int) -> dict:
    run()  # warm: contexts, caches, imports
    rounds = max(rounds, 10)
    started = time.process_time()
    for _ in range(rounds):
        run()
    cpu = max(time.process_time() - started, 1e-6)  # the clock's resolution, for a tiny --scale
    return {"rounds": rounds, "cpu_us": round(1e6 * cpu / rounds, 1), "per_core_per_s": round(rounds / cpu)}


def _handshake(client_context: ssl.SSLContext, server_context: ssl.SSLContext, host: str | None,
               check: Callable[[ssl.SSLObject], None] | None = None) -> tuple[ssl.SSLObject, ssl.SSLObject,
                                                                                  list[ssl.MemoryBIO]]:
    """One TLS handshake through memory BIOs; both ends of the connection and their four BIOs."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_context.wrap_bio(c_in, c_out, server_side=False, server_hostname=host)
    server = server_context.wrap_bio(s_in, s_out, server_side=True)
    done = {client: False, server: False}
    while not all(done.values()):
        for end in (client, server):
            if not done[end]:
                try:
                    end.do_handshake()
                    done[end] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
    if check is not None:
        check(server)
        check(client)
    return client, server, [c_in, c_out, s_in, s_out]


def _records(client: ssl.SSLObject, server: ssl.SSLObject, bios: list[ssl.MemoryBIO], payload: bytes) -> None:
    c_in, c_out, s_in, s_out = bios
    sent = 0
    view = memoryview(payload)
    while sent < len(payload):
        sent += client.write(view[sent:sent + 65536])
        s_in.write(c_out.read())
        while True:
            try:
                server.read(1 << 20)
            except ssl.SSLWantReadError:
                break


def _sales(n: int) -> list[Sale]:
    return [Sale(device_id="till-01", incarnation="5eed" * 4, seq=i + 1, created_ms=1_800_000_000_000 + i,
                 lines=(Line(sku="4006381333931", qty=1, unit_cents=199),), total_cents=199,
                 tenders=(Tender("card", 199),), txn=f"pos-{i}") for i in range(n)]


def measure(workdir: Path, *, scale: float = 1.0) -> dict:
    keys = init_keys(workdir / "keys", workdir / "releases")
    now = datetime.datetime.now(datetime.UTC)
    authorities = (x509.load_pem_x509_certificate(keys.authority.read_bytes()).public_key(),)
    cache = load_credential(keys.enrol(workdir / "cache", node_id="cache-1", store=STORE, role="cache",
                                       device_class="cache"), authorities, now=now)
    till = load_credential(keys.enrol(workdir / "till", node_id="till-01", store=STORE, role="device",
                                      device_class="till"), authorities, now=now)
    result: dict = {}

    def check(ssl_object: ssl.SSLObject) -> None:
        peer_identity(ssl_object, cache if ssl_object.server_side else till, now=now)

    server, client = peer_context(cache, server=True), peer_context(till, server=False)
    result["store_peer_mutual_tls_handshake"] = _per_op(lambda: _handshake(client, server, None, check),
                                                        int(300 * scale))

    tls_cert, tls_key = keys.issue_tls(["central.example"])
    central_server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    central_server.load_cert_chain(str(tls_cert), str(tls_key))
    to_central = central_context(keys.authority)
    result["central_https_handshake"] = _per_op(lambda: _handshake(to_central, central_server, "central.example"),
                                                int(300 * scale))

    c, s, bios = _handshake(to_central, central_server, "central.example")
    payload = bytes(RECORD_BYTES)
    records = _per_op(lambda: _records(c, s, bios, payload), int(40 * scale))
    result["tls_records_mb_per_core_s"] = round(RECORD_BYTES / 1e6 * records["per_core_per_s"], 1)

    body = msgpack.packb([sale.to_wire() for sale in _sales(BATCH)])  # as the cache sends it
    now_ms = int(now.timestamp() * 1000)

    def central_checks() -> None:
        headers = batch_signature.sign(cache.key, cache.certificate, STORE, body, now_ms=now_ms)
        sender = batch_signature.check_sender(headers, STORE, list(authorities), now_ms=now_ms)
        batch_signature.check_signature(sender, STORE, body)

    result["sales_batch_sign_and_check"] = _per_op(central_checks, int(500 * scale)) | {"sales_per_batch": BATCH}

    sku_key = Ed25519PrivateKey.generate()
    ring = KeyRing([sku_key.public_key()])
    entry = sku_signature.sign(SkuEntry(code="4006381333931", hlc=1_800_000_000_000 << 16, origin="central",
                                        name="Tea 20 bags", price_cents=199), sku_key)
    if sku_signature.problem(entry, ring) is not None:
        raise PosswarmError("security benchmark: a freshly signed SKU entry did not check (the setup is wrong)")
    result["sku_entry_check"] = _per_op(lambda: sku_signature.problem(entry, ring), int(5000 * scale))
    result["node_certificate_check"] = _per_op(lambda: verify(till.certificate, list(authorities), now=now),
                                               int(2000 * scale))
    return result


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="posswarm-bench security", description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every operation's rounds (default 1)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    try:
        with tempfile.TemporaryDirectory(prefix="posswarm-bench-security-") as tmp:
            result = measure(Path(tmp), scale=args.scale)
    except PosswarmError as exc:
        print(f"posswarm-bench security: {exc}", file=sys.stderr)
        return 1
    print_result(result, args.json)
    return 0
