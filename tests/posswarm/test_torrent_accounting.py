"""Banking per-connection byte counters into LAN / WAN / web totals, without libtorrent."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from posswarm.torrent.accounting import PeerSample, SourceTally, classify, split

STORE = "10.20.0.0/16"


def peer(ip, down, up=0, *, port=6881, local_port=40000, web=False):
    return PeerSample(remote=(ip, port), local=("10.20.0.5", local_port), is_web_seed=web, downloaded=down, uploaded=up)


def test_classify_by_store_network_and_web_seed():
    import ipaddress

    lan = ipaddress.ip_network(STORE)
    assert classify("10.20.9.9", False, lan) == "lan"
    assert classify("10.21.0.1", False, lan) == "wan"
    assert classify("10.20.9.9", True, lan) == "web"  # a web seed is a web seed wherever it sits
    assert classify("10.20.9.9", False, None) == "wan"
    assert classify("garbage", False, lan) == "wan"


def test_live_connections_count_and_vanished_ones_are_banked():
    tally = SourceTally(STORE)
    tally.observe([peer("10.20.0.7", 100, 5), peer("198.51.100.1", 300), peer("203.0.113.9", 50, web=True)])
    tally.observe([peer("10.20.0.7", 400, 9)])  # the WAN peer and the web seed went away
    t = tally.totals()
    assert (t.lan, t.wan, t.web, t.upload_lan, t.upload_wan) == (400, 300, 50, 9, 0)
    tally.observe([])
    assert tally.totals() == t  # nothing is lost when the last connection closes
    assert t.downloaded == 750 and t.uploaded == 9


def test_a_counter_that_went_down_is_a_reconnection_and_the_old_value_is_banked():
    tally = SourceTally(STORE)
    tally.observe([peer("198.51.100.1", 1000)])
    tally.observe([peer("198.51.100.1", 10)])  # same endpoints, fresh connection
    assert tally.totals().wan == 1010


def test_two_nodes_behind_one_address_are_two_connections():
    tally = SourceTally(STORE)
    tally.observe([peer("10.20.0.7", 100, port=7001), peer("10.20.0.7", 200, port=7002)])
    assert tally.totals().lan == 300


def test_close_banks_everything_live():
    tally = SourceTally(None)
    tally.observe([peer("10.20.0.7", 100, 20)])
    tally.close()
    assert tally.totals().wan == 100 and tally.totals().upload_wan == 20
    tally.observe([])
    assert tally.totals().wan == 100


@given(st.lists(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 10**6)), max_size=4), max_size=8))
def test_totals_never_go_down_while_counters_grow(polls):
    # each of 4 connections only ever grows; any subset may be visible at a poll
    tally, seen, last = SourceTally(STORE), [0, 0, 0, 0], 0
    for poll in polls:
        samples = {}
        for conn, growth in poll:
            seen[conn] += growth
            samples[conn] = peer(f"10.20.0.{conn + 1}", seen[conn])
        tally.observe(samples.values())
        total = tally.totals().downloaded
        assert total >= last
        last = total


def test_what_a_connection_carried_after_its_last_poll_is_banked_from_the_torrents_totals():
    # The seeder is killed between polls: its counter was last seen at 300, the torrent had 500 from it.
    tally = SourceTally(STORE)
    tally.observe([peer("10.20.0.7", 100, 40), peer("198.51.100.1", 300)], payload=(400, 40))
    tally.observe([peer("10.20.0.7", 150, 60)], payload=(650, 60))
    t = tally.totals()
    assert (t.lan, t.wan, t.upload_lan) == (150, 500, 60) and t.downloaded == 650


def test_the_unseen_bytes_of_several_closed_connections_are_split_by_what_each_carried():
    tally = SourceTally(STORE)
    tally.observe([peer("198.51.100.1", 300), peer("203.0.113.9", 100, web=True), peer("10.20.0.7", 0, 50)],
                  payload=(400, 50))
    tally.observe([], payload=(800, 70))
    t = tally.totals()
    assert (t.wan, t.web, t.upload_lan) == (600, 200, 70) and t.downloaded == 800


def test_connections_read_ahead_of_the_totals_bank_nothing_extra():
    tally = SourceTally(STORE)
    tally.observe([peer("198.51.100.1", 300), peer("10.20.0.7", 100)], payload=(350, 0))
    tally.observe([peer("10.20.0.7", 120)], payload=(380, 0))  # read before the LAN peer's last 40 bytes
    assert (tally.totals().wan, tally.totals().lan) == (300, 120)


def test_without_a_closed_connection_the_totals_are_the_counters():
    tally = SourceTally(STORE)
    tally.observe([peer("198.51.100.1", 300)], payload=(900, 0))  # a short connection no poll saw: no owner
    assert tally.totals().wan == 300


@given(st.integers(0, 10**12), st.lists(st.integers(0, 10**9), min_size=1, max_size=6))
def test_a_split_sums_to_the_amount_and_follows_the_weights(amount, weights):
    shares = split(amount, weights)
    assert sum(shares) == amount and all(s >= 0 for s in shares)
    if any(weights):
        assert all(s == 0 for s, w in zip(shares[:-1], weights) if w == 0)
