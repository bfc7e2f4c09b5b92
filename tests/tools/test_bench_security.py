"""The security benchmark runs posswarm's own TLS, batch and SKU checks and reports a cost for each."""

from tools.bench_security import measure


def test_every_operation_is_measured_and_costs_something(tmp_path):
    result = measure(tmp_path, scale=0.02)
    for name in ("store_peer_mutual_tls_handshake", "central_https_handshake", "sales_batch_sign_and_check",
                 "sku_entry_check", "node_certificate_check"):
        assert result[name]["cpu_us"] > 0 and result[name]["per_core_per_s"] > 0, name
    assert result["tls_records_mb_per_core_s"] > 0
