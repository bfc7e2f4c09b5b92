"""``posswarm-bench``: benchmarks of posswarm against what retailers use instead (results: docs/benchmarks.md)."""

from __future__ import annotations

import importlib
import json
import sys

#: subcommand -> module with ``main(argv) -> int``; each benchmark lives in its own module.
BENCHMARKS = {
    "distribution": ("tools.bench_distribution", "image distribution on an emulated network of stores vs HTTP"),
    "tracker": ("tools.bench_tracker", "tracker announces/s and latency vs opentracker"),
    "sales": ("tools.bench_sales", "sales from tills to central under faults: lost, duplicated, latency"),
    "sales-ingest": ("tools.bench_sales_ingest", "thousands of store caches forwarding sales into one central"),
    "sku": ("tools.bench_sku", "SKU catalog to a fresh device; one price change to every device"),
    "control-plane": ("tools.bench_control_plane", "central CPU and memory with K store caches polling and announcing"),
    "release": ("tools.bench_release", "delta updates, cross-store seeding and WAN caps on an emulated network"),
    "delta": ("tools.bench_delta", "bytes on the wire for a real ext4 image and its updates vs casync"),
    "security": ("tools.bench_security", "CPU per operation of the trust chain: TLS handshakes, signatures, checks"),
    "all": ("tools.bench_all", "rerun every benchmark above and write docs/benchmarks.md from their JSON"),
}


def print_result(result: dict, as_json: bool) -> None:
    """A benchmark's figures: one JSON line, or one ``key: value`` line each."""
    if as_json:
        print(json.dumps(result))
        return
    width = max(map(len, result), default=0)
    for key, value in result.items():
        print(f"{key:>{width}}: {value}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        lines = [f"  {name:<13} {doc}" for name, (_, doc) in BENCHMARKS.items()]
        print("usage: posswarm-bench BENCHMARK [options]\n\nbenchmarks:\n" + "\n".join(lines), file=sys.stderr)
        return 0 if argv else 2
    if argv[0] not in BENCHMARKS:
        print(f"posswarm-bench: no benchmark {argv[0][:40]!r} (choose one of: {', '.join(BENCHMARKS)})", file=sys.stderr)
        return 2
    module_name, _ = BENCHMARKS[argv[0]]
    return importlib.import_module(module_name).main(argv[1:])
