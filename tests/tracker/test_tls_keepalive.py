"""A node keeps its certified TLS connection to the tracker across announce rounds, and makes a new one by itself
when the tracker closes it: counted at a real tracker over real mutual TLS, by its handshake counter in /metrics."""

from __future__ import annotations

import datetime
import re
import resource
import socket

import httpx
import pytest
import trio
from cryptography import x509

from posswarm.announce import NodeIdentity, ReleaseReport
from posswarm.announcer import Announcer
from posswarm.errors import PosswarmError
from posswarm.identity.credential import load_credential
from posswarm.identity.tls import central_context, tracker_context
from seeder.keys_cli import init_keys
from tracker import http_server, server
from tracker.config import TrackerConfig, from_mapping

ROUNDS = 3
INTERVAL = 6  # the tracker's: above httpx's default keep-alive (5 s), which dropped the connection between rounds
REPORT = ReleaseReport("pos-image", "1.0", b"\x42" * 20, 0, 0, 0, 0, 0, True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Central:
    """Central's keys, its tracker's TLS certificate and one till's credential, as `posswarm-seeder` makes them."""

    def __init__(self, root) -> None:
        self.keys = init_keys(root / "keys", root / "releases")
        self.tls_cert, self.tls_key = self.keys.issue_tls(["127.0.0.1"])
        out = self.keys.enrol(root / "till.identity", node_id="till-01", store="S1", role="device", device_class="pos")
        authority = x509.load_pem_x509_certificate((out / "authority.crt").read_bytes()).public_key()
        self.till = load_credential(out, (authority,), now=datetime.datetime.now(datetime.UTC))
        self.port = _free_port()

    def config(self) -> TrackerConfig:
        return TrackerConfig(port=self.port, interval=INTERVAL, open=True, open_stats=True, tls_cert=str(self.tls_cert),
                             tls_key=str(self.tls_key), node_ca=str(self.keys.authority))

    async def handshakes(self) -> int:
        """The tracker's count of completed handshakes, less the one this reading costs."""
        async with httpx.AsyncClient(verify=central_context(self.keys.authority), timeout=10) as client:
            text = (await client.get(f"https://127.0.0.1:{self.port}/metrics")).text
        return int(float(re.search(r'^posswarm_tracker_tls_handshakes_total\{result="ok"\} (\S+)$', text, re.M)[1])) - 1


async def test_a_node_reuses_its_tls_connection_across_rounds_and_reconnects_after_the_tracker_drops_it(
        tmp_path, nursery):
    central = Central(tmp_path)
    rounds = {"done": 0, "until": ROUNDS, "reached": trio.Event(), "kick": False}

    def on_peers(report, peers) -> None:
        rounds["done"] += 1
        if rounds["done"] >= rounds["until"]:
            rounds["reached"].set()
        elif rounds["kick"]:
            announcer.kick()  # the next round now, not after the tracker's interval

    who = NodeIdentity("till-01", "S1", "device", "pos", "127.0.0.1", 6881)
    announcer = Announcer(f"https://127.0.0.1:{central.port}/announce", who, lambda: [REPORT], on_peers,
                          verify=tracker_context(central.till, central.keys.authority))
    with trio.CancelScope() as first_tracker:
        async with trio.open_nursery() as tracker:
            await tracker.start(server.run, central.config())
            with trio.fail_after(ROUNDS * INTERVAL + 30):
                await nursery.start(announcer.run)
                await rounds["reached"].wait()  # rounds at the tracker's interval
                assert await central.handshakes() == 1  # three rounds, one handshake
            first_tracker.cancel()  # the tracker restarts: every connection it held is closed

    rounds.update(until=2 * ROUNDS, reached=trio.Event(), kick=True)
    with trio.fail_after(30):
        await nursery.start(server.run, central.config())
        announcer.kick()
        await rounds["reached"].wait()
        assert await central.handshakes() == 1  # the restarted tracker's count: one reconnect, then reused
    assert announcer.last_error is None  # no round failed on the closed connection


def test_an_idle_timeout_not_above_the_interval_is_refused_with_the_reason():
    assert from_mapping({"open": True, "interval": 45}).effective_idle_timeout == 90
    with pytest.raises(PosswarmError, match="idle_timeout = 30 is not above interval = 30: every announce round would "
                                        "pay a new TLS handshake"):
        from_mapping({"open": True, "idle_timeout": 30})


def test_the_tracker_raises_its_open_files_limit_to_hold_its_connections():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (512, hard))  # most systems start a process at 1,024
    try:
        assert http_server._room_for(1000) == min(1000, hard - http_server.OWN_FILES)
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == min(1000 + http_server.OWN_FILES, hard)
        if hard != resource.RLIM_INFINITY:
            assert http_server._room_for(10 * hard) == hard - http_server.OWN_FILES  # the table holds what fits
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
