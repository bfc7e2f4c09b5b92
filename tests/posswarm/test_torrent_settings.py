"""The settings pack and address rules a node gives libtorrent (pure; libtorrent only checks them)."""

from __future__ import annotations

import libtorrent as lt
import pytest

from posswarm.errors import PosswarmError
from posswarm.torrent import settings
from posswarm.torrent.settings import SessionConfig, ip_filter_rules, peer_class_rules, session_settings


def test_alert_bits_and_class_ids_match_libtorrent():
    ac = lt.alert_category
    assert settings.ALERT_MASK == int(ac.error | ac.peer | ac.storage | ac.status | ac.ip_block | ac.file_progress)
    assert settings.GLOBAL_PEER_CLASS == lt.session.global_peer_class_id
    assert settings.LOCAL_PEER_CLASS == lt.session.local_peer_class_id


def test_lan_swarm_settings_are_tcp_only_and_keep_counters():
    s = session_settings(SessionConfig("127.0.1.10"))
    assert s["listen_interfaces"] == "127.0.1.10:0"
    assert s["outgoing_interfaces"] == "127.0.1.10"
    assert not any(s[k] for k in ("enable_dht", "enable_lsd", "enable_upnp", "enable_natpmp"))
    assert not s["enable_outgoing_utp"] and not s["enable_incoming_utp"]
    assert s["allow_multiple_connections_per_ip"] and not s["close_redundant_connections"]
    assert s["stop_tracker_timeout"] == 0 and s["alert_queue_size"] == 10000
    assert "max_retry_port_bind" not in s  # an ephemeral port may retry


def test_a_lan_only_device_queues_less_to_send_than_a_node_with_wan_peers():
    device = session_settings(SessionConfig("10.20.0.5", lan_network="10.20.0.0/16", lan_only=True))
    cache = session_settings(SessionConfig("10.20.0.2", lan_network="10.20.0.0/16"))
    assert device["send_buffer_watermark"] == 1 << 20 < cache["send_buffer_watermark"] == 3 << 20
    assert device["send_buffer_low_watermark"] < device["send_buffer_watermark"]


def test_fixed_port_must_not_move_and_ipv6_is_bracketed():
    s = session_settings(SessionConfig("::1", listen_port=6881))
    assert s["listen_interfaces"] == "[::1]:6881"
    assert s["max_retry_port_bind"] == 0 and s["listen_system_port_fallback"] is False


def test_libtorrent_accepts_the_settings_pack():
    pack = session_settings(SessionConfig("127.0.1.10", listen_port=6881))
    applied = lt.session_params(pack).settings
    for name, value in pack.items():
        assert applied[name] == value, name


def test_peer_classes_put_only_the_store_lan_in_the_local_class():
    config = SessionConfig("10.20.0.5", lan_network="10.20.0.0/16")
    rules = peer_class_rules(config, wan_class=3)
    assert ("0.0.0.0", "255.255.255.255", 1 << 3) in rules
    assert ("10.20.0.0", "10.20.255.255", 1 << settings.LOCAL_PEER_CLASS) in rules
    # without a store LAN everything is WAN, private ranges included
    assert all(flags == 1 << 3 for _, _, flags in peer_class_rules(SessionConfig("10.20.0.5"), wan_class=3))


def test_wan_class_carries_the_limits():
    assert settings.wan_peer_class(SessionConfig("10.0.0.1", upload_limit_wan=2_000_000)) == {
        "label": "wan",
        "upload_limit": 2_000_000,
        "download_limit": 0,
    }


def test_a_capped_wan_gets_a_receive_buffer_of_a_quarter_second_at_the_cap():
    # uncapped: the OS autotunes; capped: 0.25 s at the cap, never below 64 KiB
    assert settings.receive_buffer(0) == 0
    assert settings.receive_buffer(2_000_000) == 500_000
    assert settings.receive_buffer(10_000) == settings.MIN_RECEIVE_BUFFER
    # a socket once given a buffer no longer autotunes: when the cap lifts it gets room for a fast WAN
    assert settings.receive_buffer(0, was_capped=True) == settings.UNCAPPED_RECEIVE_BUFFER
    assert session_settings(SessionConfig("10.0.0.1", download_limit_wan=2_000_000))["recv_socket_buffer_size"] == 500_000
    assert session_settings(SessionConfig("10.0.0.1"))["recv_socket_buffer_size"] == 0
    # a capped session ticks faster, so libtorrent hands a peer its quota in small reads
    assert session_settings(SessionConfig("10.0.0.1", download_limit_wan=1))["tick_interval"] == settings.CAPPED_TICK_MS
    assert session_settings(SessionConfig("10.0.0.1"))["tick_interval"] == settings.UNCAPPED_TICK_MS


def test_lan_only_blocks_everything_but_the_store():
    assert ip_filter_rules(SessionConfig("10.20.0.5", lan_network="10.20.0.0/16")) == []
    rules = ip_filter_rules(SessionConfig("10.20.0.5", lan_network="10.20.0.0/16", lan_only=True))
    f = lt.ip_filter()
    for first, last, flags in rules:
        f.add_rule(first, last, flags)
    assert f.access("10.20.3.4") == 0
    assert f.access("10.21.0.1") == 1 and f.access("8.8.8.8") == 1 and f.access("2001:db8::1") == 1


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"listen_ip": "till-7"}, "not an IP address"),
        ({"listen_ip": "10.0.0.1", "listen_port": 70000}, "out of range"),
        ({"listen_ip": "10.0.0.1", "lan_network": "10.0.0.0/33"}, "not a CIDR"),
        ({"listen_ip": "10.0.0.1", "lan_only": True}, "lan_only needs lan_network"),
        ({"listen_ip": "10.0.0.1", "upload_limit_wan": -1}, "must be >= 0"),
    ],
)
def test_bad_config_names_the_fix(kwargs, match):
    with pytest.raises(PosswarmError, match=match):
        SessionConfig(**kwargs)
