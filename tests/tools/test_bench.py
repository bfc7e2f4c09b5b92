"""``posswarm-bench``: every benchmark it lists exists, and a wrong name gets one line naming the real ones."""

import ast
from pathlib import Path

import pytest

from tools import bench

ROOT = Path(__file__).parents[2]


@pytest.mark.parametrize("name", sorted(bench.BENCHMARKS))
def test_every_listed_benchmark_has_a_main(name):
    module_name, _ = bench.BENCHMARKS[name]
    source = ROOT / (module_name.replace(".", "/") + ".py")
    functions = {n.name for n in ast.parse(source.read_text()).body if isinstance(n, ast.FunctionDef)}
    assert "main" in functions


def test_an_unknown_benchmark_is_one_line_listing_the_real_ones(capsys):
    assert bench.main(["distrib"]) == 2
    err = capsys.readouterr().err
    assert err == f"posswarm-bench: no benchmark 'distrib' (choose one of: {', '.join(bench.BENCHMARKS)})\n"


def test_help_lists_every_benchmark(capsys):
    assert bench.main(["--help"]) == 0
    assert bench.main([]) == 2
    listed = [line.split()[0] for line in capsys.readouterr().err.splitlines() if line.startswith("  ")]
    assert listed == [*bench.BENCHMARKS, *bench.BENCHMARKS]
