"""A cache's /metrics from its status document, read back by prometheus-client's own parser."""

from prometheus_client.parser import text_string_to_metric_families

from posswarm import node_metrics


def status(**changes) -> dict:
    doc = {
        "node": "cache-0042", "role": "cache", "store": "S0042", "class": None, "peers": ["till-01", "till-02"],
        "releases": [{"name": "pos-os", "version": "2026.11", "state": "seeding", "done_bytes": 700, "wanted_bytes": 700,
                      "bytes_from_wan": 710, "bytes_from_lan": 0, "bytes_uploaded": 1400, "peers": 2},
                     {"name": "pos-os", "version": "2026.12", "state": "downloading", "done_bytes": 250,
                      "wanted_bytes": 1000, "bytes_from_wan": 250, "bytes_from_lan": 0, "bytes_uploaded": 0,
                      "peers": 1}],
        "central_state": {"fresh": True, "expires": 1_800_000_000.0},
        "tracker": {"last_ok": 1_799_990_000.0}, "catalog": {"last_ok": None},
    }
    return {**doc, **changes}


def families(doc: dict) -> dict:
    return {f.name: f for f in text_string_to_metric_families(node_metrics.exposition(doc).decode())}


def test_release_figures_and_one_state_per_release():
    f = families(status())
    assert {s.labels["release"]: s.value for s in f["posswarm_node_wan_bytes"].samples} == {
        "pos-os@2026.11": 710, "pos-os@2026.12": 250}
    assert {s.labels["release"]: s.value for s in f["posswarm_node_release_done_ratio"].samples} == {
        "pos-os@2026.11": 1.0, "pos-os@2026.12": 0.25}
    on = {(s.labels["release"], s.labels["state"]) for s in f["posswarm_node_release_state"].samples if s.value}
    assert on == {("pos-os@2026.11", "seeding"), ("pos-os@2026.12", "downloading")}
    per_release = [s for s in f["posswarm_node_release_state"].samples if s.labels["release"] == "pos-os@2026.12"]
    assert len(per_release) == len(node_metrics.RELEASE_STATES)  # every state a series, so count() sees zeros
    assert f["posswarm_node_store_peers"].samples[0].value == 2
    info = f["posswarm_node_info"].samples[0].labels
    assert info == {"node": "cache-0042", "store": "S0042", "role": "cache", "device_class": "-"}


def test_what_a_node_does_not_know_yet_is_absent_not_zero():
    f = families(status(releases=[], central_state={"fresh": False, "expires": None}, tracker={"last_ok": None}))
    assert f["posswarm_node_central_state_fresh"].samples[0].value == 0
    # No expiry, no contact: no sample, so "time() - last_ok" alerts cannot fire on a made-up 1970.
    for name in ("posswarm_node_central_state_expires_timestamp_seconds",
                 "posswarm_node_tracker_last_ok_timestamp_seconds", "posswarm_node_catalog_last_ok_timestamp_seconds",
                 "posswarm_node_wan_bytes"):
        assert name not in f or not f[name].samples, name
