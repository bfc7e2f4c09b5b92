"""libtorrent settings for a store swarm, as plain dicts and address rules (no libtorrent import)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from posswarm.errors import PosswarmError

# libtorrent 2.1 alert_category bits, spelled out so this module needs no libtorrent import;
# tests/posswarm/test_torrent_settings.py checks them against the library.
ALERT_ERROR = 1
ALERT_PEER = 2
ALERT_STORAGE = 8
ALERT_STATUS = 64
ALERT_IP_BLOCK = 256
ALERT_FILE_PROGRESS = 2097152  # file_completed_alert: a chunk file is complete (posswarm/staging_stream.py)
ALERT_MASK = ALERT_ERROR | ALERT_PEER | ALERT_STORAGE | ALERT_STATUS | ALERT_IP_BLOCK | ALERT_FILE_PROGRESS

# libtorrent's built-in peer class ids (session.global_peer_class_id / local_peer_class_id).
GLOBAL_PEER_CLASS = 0
LOCAL_PEER_CLASS = 2

# A WAN download cap is kept by reading sockets slowly; the kernel's receive buffer is what the sender
# may still push at line rate. Autotuned it grows to megabytes, so a capped WAN link saw bursts at full
# link speed followed by seconds of silence (measured: 16 Mbit/s cap on 200 Mbit/s, 0.25 s samples from
# 0 to 112 Mbit/s). Under a cap the buffer holds a quarter second at the capped rate: enough for a
# 250 ms round trip at that rate, and no burst on the link longer than that. libtorrent sets it on every
# peer socket, LAN ones too; at LAN round trips (< 1 ms) even the 64 KiB floor carries over 500 Mbit/s.
CAPPED_BUFFER_S = 0.25
MIN_RECEIVE_BUFFER = 64 * 1024
# once set, a socket's buffer no longer autotunes; when a cap lifts, give it room for a fast WAN
UNCAPPED_RECEIVE_BUFFER = 4 << 20
# libtorrent grants a capped peer's bandwidth request once it is whole (about request_queue_time of the
# cap) or after 20 ticks (bw_request's ttl), and the peer then reads all of it at line rate. At 100 ms
# ticks that is a 1-2 s gulp; a download of a few MB (a real image's compressed chunks: 7.8 MB for
# 32 MiB) ran 13-17 % over the cap between its 10 % and 90 % marks, gulps at 2.8x the cap in 0.25 s.
# At 10 ms a gulp is at most 0.2 s of the cap: 0.95-0.96x, no 0.25 s above 1.8x (loopback, load 14).
# The cost is the faster tick, 0.8 % of a core in an idle session (0.09 % at 100 ms), so only under a cap.
CAPPED_TICK_MS = 10
UNCAPPED_TICK_MS = 100
# What libtorrent queues per peer to send, at most. 3 MiB (high_performance_seed's) keeps a WAN of 100+ ms round
# trips full; a device talks only to its store LAN (< 1 ms: 400 Mbit/s needs 50 KB), and with 12 peers its
# queues were much of its peak memory: 1 MiB took a till of 12 from 81-94 to 73-82 MiB RssAnon (posswarm-netsim,
# 48 MiB image), with no change in completion beyond the run-to-run spread.
SEND_BUFFER = 3 << 20
LAN_ONLY_SEND_BUFFER = 1 << 20

_ALL_V4 = ("0.0.0.0", "255.255.255.255")
_ALL_V6 = ("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")


@dataclass(frozen=True)
class SessionConfig:
    """Where a node's libtorrent session listens, what counts as its store LAN, and its WAN limits."""

    listen_ip: str  # e.g. "127.0.1.10"; also the outgoing interface (else peers on loopback collide)
    listen_port: int = 0  # 0 = ephemeral; the real port comes from listen_succeeded_alert
    lan_network: str | None = None  # CIDR of the store LAN: peers inside are "lan", others "wan"
    lan_only: bool = False  # devices: refuse every address outside lan_network, both directions
    upload_limit_wan: int = 0  # bytes/s towards non-LAN peers (0 = unlimited); the LAN is never limited
    download_limit_wan: int = 0  # bytes/s from non-LAN peers and web seeds (0 = unlimited)

    def __post_init__(self) -> None:
        try:
            ipaddress.ip_address(self.listen_ip)
        except ValueError:
            raise PosswarmError(
                f"torrent session: listen_ip {self.listen_ip!r} is not an IP address (give the node's LAN address)"
            ) from None
        if not 0 <= self.listen_port <= 65535:
            raise PosswarmError(f"torrent session: listen_port {self.listen_port} is out of range (use 0..65535)")
        if self.lan_network is not None:
            lan_network_of(self.lan_network)
        if self.lan_only and self.lan_network is None:
            raise PosswarmError("torrent session: lan_only needs lan_network (set the store LAN's CIDR)")
        if self.upload_limit_wan < 0 or self.download_limit_wan < 0:
            raise PosswarmError("torrent session: WAN rate limits must be >= 0 bytes/s (0 = unlimited)")


def lan_network_of(cidr: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """Parse a store LAN's CIDR, or say how it is wrong."""
    try:
        return ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        raise PosswarmError(
            f"torrent session: lan_network {cidr!r} is not a CIDR network (e.g. 10.20.0.0/16)"
        ) from None


def session_settings(config: SessionConfig) -> dict:
    """The settings of a store swarm: TCP-only LAN swarm, no discovery of its own, counters that survive."""
    ip = config.listen_ip
    host = f"[{ip}]" if ":" in ip else ip
    settings = {
        "listen_interfaces": f"{host}:{config.listen_port}",
        "outgoing_interfaces": ip,
        # peers come from mDNS and the tracker via connect_peer; libtorrent finds none itself
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        # uTP loses datagrams to small UDP receive buffers and crawls; TCP runs at line rate
        "enable_outgoing_utp": False,
        "enable_incoming_utp": False,
        "allow_multiple_connections_per_ip": True,  # many nodes behind one NAT, or on one test host
        "close_redundant_connections": False,  # seed<->seed links stay, so per-peer byte counters survive
        "max_out_request_queue": 1500,
        "max_allowed_in_request_queue": 2000,
        "send_buffer_watermark": LAN_ONLY_SEND_BUFFER if config.lan_only else SEND_BUFFER,
        "send_buffer_low_watermark": (LAN_ONLY_SEND_BUFFER if config.lan_only else SEND_BUFFER) // 3,
        "send_buffer_watermark_factor": 150,
        "unchoke_slots_limit": -1,
        "alert_queue_size": 10000,
        "alert_mask": ALERT_MASK,
        "stop_tracker_timeout": 0,  # teardown must not wait 5 s on a tracker
        # 60 s by default, times the peer's failures: a connection dropped while it was being made (a till that
        # rebooted, add_params.connect_now racing a tick) was tried again only a minute later
        "min_reconnect_time": 2,
        # a capped download reads in quota-sized gulps; with the default 500 ms tick and 3 s of queued
        # requests the gulps came seconds apart at line rate. A short tick and 1 s keep them small and even
        **wan_cap_settings(config.download_limit_wan),
        "request_queue_time": 1,
    }
    if config.listen_port:
        # a fixed port must fail loudly rather than silently move to the next one
        settings["max_retry_port_bind"] = 0
        settings["listen_system_port_fallback"] = False
    return settings


def receive_buffer(download_limit_wan: int, *, was_capped: bool = False) -> int:
    """libtorrent's recv_socket_buffer_size for a WAN download cap in bytes/s (0 = OS autotuning)."""
    if download_limit_wan > 0:
        return max(MIN_RECEIVE_BUFFER, int(download_limit_wan * CAPPED_BUFFER_S))
    return UNCAPPED_RECEIVE_BUFFER if was_capped else 0


def wan_cap_settings(download_limit_wan: int, *, was_capped: bool = False) -> dict:
    """The settings that keep a WAN download cap in bytes/s (0 = none), applied again whenever it changes."""
    return {"recv_socket_buffer_size": receive_buffer(download_limit_wan, was_capped=was_capped),
            "tick_interval": CAPPED_TICK_MS if download_limit_wan > 0 else UNCAPPED_TICK_MS}


def _ranges(config: SessionConfig) -> tuple[tuple[str, str], ...]:
    """The store LAN as first/last address pairs (empty when no LAN is configured)."""
    if config.lan_network is None:
        return ()
    net = lan_network_of(config.lan_network)
    return ((str(net.network_address), str(net.broadcast_address)),)


def peer_class_rules(config: SessionConfig, wan_class: int) -> list[tuple[str, str, int]]:
    """Peer-class filter rules (first, last, class bitmask): the LAN is local and unlimited, the rest "wan".

    These replace libtorrent's built-in private-range rules, so 10/8 etc. outside the
    store are WAN too.
    """
    rules = [(*_ALL_V4, 1 << wan_class), (*_ALL_V6, 1 << wan_class)]
    rules += [(first, last, 1 << LOCAL_PEER_CLASS) for first, last in _ranges(config)]
    return rules


def wan_peer_class(config: SessionConfig) -> dict:
    """The "wan" peer class's settings (0 = unlimited)."""
    return {
        "label": "wan",
        "upload_limit": config.upload_limit_wan,
        "download_limit": config.download_limit_wan,
    }


def ip_filter_rules(config: SessionConfig) -> list[tuple[str, str, int]]:
    """ip_filter rules (first, last, 1 = blocked) for a lan_only node; empty = allow everyone."""
    if not config.lan_only:
        return []
    rules = [(*_ALL_V4, 1), (*_ALL_V6, 1)]
    rules += [(first, last, 0) for first, last in _ranges(config)]
    return rules
