"""``posswarm-bench release``: which runs it makes, how it judges them, and its one-line refusals."""

from __future__ import annotations

import pytest

from tools import bench, bench_release


def args(*argv: str):
    return bench_release._parser().parse_args(list(argv))


def test_all_three_measurements_run_by_default_and_cross_store_runs_with_and_without():
    runs = bench_release.scenarios(args("--stores", "8"))
    assert [name for name, _ in runs] == ["delta", "cross-store", "no-cross-store", "wan-cap"]
    by_name = dict(runs)
    assert by_name["delta"].update_percent == 5.0 and by_name["delta"].image_mb == 256
    assert by_name["cross-store"].cross_store and by_name["cross-store"].stores == 8
    assert not by_name["no-cross-store"].cross_store and by_name["no-cross-store"].stores == 8
    cap = by_name["wan-cap"]
    assert cap.wan_cap_kbps == 16_000 and cap.wan_mbit * 1000 > cap.wan_cap_kbps  # the link is not the limit
    assert [n for n, _ in bench_release.scenarios(args("--only", "wan-cap"))] == ["wan-cap"]


def test_rows_judge_each_measurement_against_its_target():
    result = {"image_bytes": 1 << 25, "completion_s": 20.0, "central_upload_bytes": 40 << 20,
              "central_upload_per_image": 1.25,
              "update": {"wan_per_changed_byte": 1.4, "changed_bytes": 100, "wan_bytes_in": 140, "completion_s": 3.0},
              "wan_cap": {"kbps": 16000, "worst_off_percent": 1.9, "wire_kbps": [16307], "payload_kbps": [15594]}}
    runs = dict(bench_release.scenarios(args()))
    delta = bench_release.row("delta", runs["delta"], result)
    assert delta["met"] is False and delta["measured"] == 1.4 and delta["completion_s"] == 3.0
    assert bench_release.row("cross-store", runs["cross-store"], result)["met"] is True
    assert bench_release.row("no-cross-store", runs["no-cross-store"], result)["met"] is None  # a reference
    cap = bench_release.row("wan-cap", runs["wan-cap"], result)
    assert cap["met"] is True and cap["wire_kbps"] == [16307]
    # a download too short to sample is not a pass
    short = result | {"wan_cap": {"kbps": 16000, "error": "a download was too short to sample"}}
    assert bench_release.row("wan-cap", runs["wan-cap"], short)["met"] is False
    assert "NO" in bench_release.table([delta])


@pytest.mark.parametrize("argv, says", [
    (["--stores", "1"], "--stores 1: use at least 2"),
    (["--image-mb", "1"], "--image-mb 1: use at least 4"),
    (["--cap-kbps", "40000", "--cap-link-mbit", "40"], "needs a faster --cap-link-mbit"),
])
def test_bad_arguments_get_one_line_and_exit_2(argv, says, capsys):
    assert bench.main(["release", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and len(err.splitlines()) == 1
