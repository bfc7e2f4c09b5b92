"""Before a valid connection id the UDP tracker never answers with more bytes than it was sent, and logs nothing."""

import os
import socket
import struct

import trio
from prometheus_client.parser import text_string_to_metric_families

from tracker import udp_server, udp_wire
from tracker.access import Access
from tracker.config import TrackerConfig
from tracker.desk import Desk
from tracker.metrics import TrackerMetrics
from tracker.peerstore import MemoryPeerStore

H = b"\x77" * 20


def probes() -> list[bytes]:
    """What a spoofing attacker would send: nothing here carries a connection id we issued."""
    forged = 0x1122334455667788
    announce = struct.pack(">QII20s20sQQQIIIiH", forged, 1, 7, H, b"-XX0001-" + b"y" * 12, 0, 1, 0, 2, 0, 0, -1, 6881)
    return [
        b"\x00" * 16, b"\xff" * 16, os.urandom(40), os.urandom(1500), b"\x00" * 5000,   # garbage of every size
        struct.pack(">QII", udp_wire.PROTOCOL_ID, 9, 1) + b"\x00" * 4,               # a connect with an unknown action
        struct.pack(">QII", forged, 1, 2),                                           # an announce of 16 bytes
        announce[:40],                                                               # a short announce
        announce,                                                                    # a whole one, forged id
        announce[:-10] + struct.pack(">IIiH", 0, 0, -1, 0) + b"\x02\x05/nope",        # port 0 + URL data
        struct.pack(">QII", forged, 2, 3),                                           # a scrape with no hashes
        struct.pack(">QII", forged, 2, 4) + H * 100,                                 # a scrape of 100 hashes
    ]


async def test_no_reply_is_larger_than_its_request_before_a_valid_connection_id(nursery, capfd):
    config = TrackerConfig(open=True)
    desk = Desk(config, MemoryPeerStore(peer_ttl=90, retain=1000), Access(open=True))
    metrics = TrackerMetrics()
    tracker = await nursery.start(lambda task_status: udp_server.run(desk, "127.0.0.1", 0, lambda: 10_000.0,
                                                                     metrics=metrics, task_status=task_status))
    sent = received = 0
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        await sock.bind(("127.0.0.9", 0))
        for n, probe in enumerate(probes() * 20):
            await sock.sendto(probe, tracker)
            # A connect after each probe: the replies before its answer are the probe's (the socket is ordered).
            marker = 100_000 + n
            await sock.sendto(struct.pack(">QII", udp_wire.PROTOCOL_ID, udp_wire.CONNECT, marker), tracker)
            sent += len(probe) + 16
            with trio.fail_after(5):
                while True:
                    reply = (await sock.recvfrom(65536))[0]
                    received += len(reply)
                    if reply[:8] == struct.pack(">II", udp_wire.CONNECT, marker):
                        break
                    assert len(reply) <= len(probe), (probe[:20], reply)
    assert received / sent <= 1.0
    families = {f.name: f for f in text_string_to_metric_families(metrics.exposition().decode())}
    dropped = {s.labels["reason"]: s.value for s in families["posswarm_tracker_udp_dropped"].samples
               if s.name.endswith("_total")}
    assert dropped == {"garbage": 6 * 20, "unproven": 6 * 20}
    out, err = capfd.readouterr()
    assert "udp." not in out + err  # counted, never a log line per packet
    print(f"before a handshake: {received} bytes answered to {sent} sent ({received / sent:.3f})")
