"""``posswarm-bench all`` writes docs/benchmarks.md itself: the real command at tiny sizes, then the writer's rules."""

from __future__ import annotations

import subprocess

from tools import bench, bench_all, bench_docs

HAND_WRITTEN = "# Benchmarks\n\nAn introduction.\n\n## A section written by hand\n\nIts analysis.\n"


def test_the_real_command_at_quick_size_writes_stamped_blocks_and_keeps_the_rest(tmp_path, capsys):
    doc = tmp_path / "benchmarks.md"
    doc.write_text(HAND_WRITTEN)
    assert bench.main(["all", "--quick", "--only", "sku,control-plane", "--doc", str(doc)]) == 0
    text = doc.read_text()
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=bench_all.ROOT).stdout
    assert head.strip() and text.count(f"Commit `{head.strip()}`") == 2
    assert text.startswith("# Benchmarks\n\nAn introduction.\n\n" + bench_docs.REGION_BEGIN)
    assert text.endswith(bench_docs.REGION_END + "\n\n## A section written by hand\n\nIts analysis.\n")
    found = bench_docs.blocks(text)
    assert list(found) == ["control-plane", "sku"]  # the order of RUNS, not of --only
    assert "| skus | 2,000 |" in found["sku"] and "| price_changes | 3 |" in found["sku"]
    assert "| stores | 20 |" in found["control-plane"] and "central.seeder.rss_mb" in found["control-plane"]
    assert "`posswarm-bench sku --skus 2000 --devices 2 --changes 3 --json`" in found["sku"]
    assert "Quick size" in found["sku"]
    assert "wrote" in capsys.readouterr().out


def test_a_rerun_replaces_only_its_own_block_and_a_failure_says_why():
    body = bench_docs.update(HAND_WRITTEN, "sku", "### sku\nold", bench_all.NAMES)
    body = bench_docs.update(body, "tracker", "### tracker\nfigures", bench_all.NAMES)
    again = bench_docs.update(body, "sku", "### sku\nnew", bench_all.NAMES)
    assert bench_docs.blocks(again) == {"tracker": "### tracker\nfigures", "sku": "### sku\nnew"}
    assert again.count(bench_docs.REGION_BEGIN) == 1 and again.count("Its analysis.") == 1
    run = next(r for r in bench_all.RUNS if r.name == "sku")
    failed = bench_all.render(run, False, ["posswarm-bench", "sku", "--json"], None, "no store came up", 3.0, "Stamp")
    assert failed.endswith("**Failed**: no store came up") and "`posswarm-bench sku --json`" in failed


def test_records_with_many_fields_are_turned_on_their_side():
    wide = [{"name": f"n{i}", **{f"k{j}": j for j in range(12)}} for i in range(2)]
    lines = bench_docs.records(wide)
    assert lines[0] == "|  | n0 | n1 |" and "| k11 | 11 | 11 |" in lines
    narrow = bench_docs.records([{"system": "varnish", "completion_s": 1.25, "nested": {"a": None}}])
    assert narrow == ["| system | completion_s | nested.a |", "|---|---|---|", "| varnish | 1.25 | - |"]


def test_an_unknown_benchmark_or_a_missing_document_is_one_line(tmp_path, capsys):
    assert bench.main(["all", "--only", "distrib"]) == 2
    assert bench.main(["all", "--doc", str(tmp_path / "none.md")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "choose from distribution," in err[0] and "no such file" in err[1]
