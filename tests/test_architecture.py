"""The shape of the code: pure cores import no I/O and read no clock, modules stay small, imports never loop.

Every check reads the source with ``ast`` (nothing is imported), so it is deterministic and finds imports
inside functions as well as at the top of a module.
"""

from __future__ import annotations

import ast
import graphlib
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("posswarm", "seeder", "tracker", "tools")

# This tuple is the project's definition of "pure core": modules that take bytes, events and a `now`
# and return decisions, so they run the same in a test, a benchmark and a till. They import no I/O
# library (IO_LIBRARIES), read no clock (CLOCKS), and reach neither through another project module.
# A new module with pure logic belongs here; a module that needs I/O belongs in a driver at the edge.
PURE = (
    "posswarm/admission.py",
    "posswarm/announce.py",
    "posswarm/catalog/model.py",
    "posswarm/catalog/shelf.py",
    "posswarm/trust/roles.py",
    "posswarm/trust/state.py",
    "posswarm/identity/certificate.py",
    "posswarm/identity/enrolment_request.py",
    "posswarm/identity/revocations.py",
    "tracker/store_caches.py",
    "posswarm/discovery/records.py",
    "posswarm/endpoint.py",
    "posswarm/gossip/faults.py",
    "posswarm/install_window.py",
    "posswarm/gossip/frames.py",
    "posswarm/gossip/messages.py",
    "posswarm/gossip/replay.py",
    "posswarm/lifecycle/__init__.py",
    "posswarm/lifecycle/choosing.py",
    "posswarm/lifecycle/effects.py",
    "posswarm/lifecycle/events.py",
    "posswarm/lifecycle/states.py",
    "posswarm/lifecycle/transitions.py",
    "posswarm/manifest.py",
    "posswarm/rollout.py",
    "posswarm/sales/batch_signature.py",
    "posswarm/sales/marks.py",
    "posswarm/sales/model.py",
    "posswarm/sales/stored.py",
    "posswarm/signed_doc.py",
    "posswarm/slots/state.py",
    "posswarm/staging_plan.py",
    "posswarm/sku/entry.py",
    "posswarm/sku/hlc.py",
    "posswarm/sku/signature.py",
    "posswarm/storedata/permissions.py",
    "posswarm/targeting.py",
    "posswarm/guess_limit.py",
    "posswarm/operator_credential.py",
    "posswarm/torrent/accounting.py",
    "posswarm/torrent/settings.py",
    "posswarm/wan_window.py",
    "tools/bench_docs.py",
    "tools/netsim/rates.py",
    "tools/netsim/varnish_evidence.py",
    "tools/netsim/topology.py",
    "tools/netsim/wire.py",
    "tools/sales_verdict.py",
    "seeder/sales_stream.py",
    "tracker/access.py",
    "tracker/announce.py",
    "tracker/dashboard.py",
    "tracker/dashboard_store.py",
    "tracker/fleet.py",
    "tracker/desk.py",
    "tracker/handout/__init__.py",
    "tracker/handout/completeness.py",
    "tracker/handout/store_first.py",
    "tracker/connections.py",
    "tracker/http_wire.py",
    "tracker/isolation.py",
    "tracker/peerstore.py",
    "tracker/stats.py",
    "tracker/udp_wire.py",
)

IO_LIBRARIES = frozenset({
    "trio", "anyio", "asyncio", "socket", "socketserver", "selectors", "select", "ssl", "subprocess",
    "zeroconf", "libtorrent", "sqlite3", "httpx", "hypercorn", "starlette", "redis", "psycopg",
    "urllib.request", "http.client", "http.server",
})
CLOCKS = frozenset({
    "time.time", "time.time_ns", "time.monotonic", "time.monotonic_ns", "time.perf_counter",
    "time.perf_counter_ns", "time.process_time", "time.process_time_ns", "time.thread_time", "time.sleep",
    "datetime.datetime.now", "datetime.datetime.utcnow", "datetime.datetime.today", "datetime.date.today",
    "trio.current_time", "trio.sleep", "posswarm.wallclock.now_ms",
})

MAX_LINES = 400
# A module longer than MAX_LINES, with the reason it may be for now. Empty today: keep it so.
LONG_MODULES: dict[str, str] = {}


def _all_files() -> list[str]:
    return sorted(str(p.relative_to(ROOT)) for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def _module_of(path: str) -> str:
    parts = list(Path(path).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def _modules() -> dict[str, str]:
    """Dotted module name -> file, for every module of the project."""
    return {_module_of(f): f for f in _all_files()}


@cache
def _tree(path: str) -> ast.Module:
    return ast.parse((ROOT / path).read_text(), filename=path)


def _imported(path: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """Every dotted name an import statement may load: the module, and module.name for ``from m import name``."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = _module_of(path).split(".")
        if not path.endswith("__init__.py"):
            package = package[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join([*package, base] if base else package)
    return [base, *(f"{base}.{alias.name}" for alias in node.names)]


def _imports(path: str, *, module_level_only: bool = False) -> list[tuple[str, int]]:
    """(dotted name, line) of every import in a file; with module_level_only, those run when it is imported."""
    found = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if module_level_only and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if module_level_only and isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.extend((name, child.lineno) for name in _imported(path, child))
            visit(child)

    visit(_tree(path))
    return found


def _project_imports(path: str, *, module_level_only: bool = False) -> set[str]:
    modules = _modules()
    return {name for name, _ in _imports(path, module_level_only=module_level_only) if name in modules}


def _io_imports(path: str) -> list[str]:
    out = []
    for name, line in _imports(path):
        library = next((lib for lib in sorted(IO_LIBRARIES) if name == lib or name.startswith(lib + ".")), None)
        if library is not None and (found := f"{path}:{line} imports {library}") not in out:
            out.append(found)
    return out


def _dotted(node: ast.AST, aliases: dict[str, str]) -> str | None:
    attrs = []
    while isinstance(node, ast.Attribute):
        attrs.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name) or node.id not in aliases:
        return None
    return ".".join([aliases[node.id], *reversed(attrs)])


def _clock_reads(path: str) -> list[str]:
    """Every reference to a clock, however it was imported (``import time as t``, ``from datetime import date``)."""
    tree = _tree(path)
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    aliases[alias.asname] = alias.name
                else:
                    top = alias.name.split(".")[0]
                    aliases[top] = top
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return [
        f"{path}:{node.lineno} reads the clock ({name})"
        for node in ast.walk(tree)
        if isinstance(node, (ast.Name, ast.Attribute)) and (name := _dotted(node, aliases)) in CLOCKS
    ]


def _reached(path: str) -> dict[str, list[str]]:
    """Every project module a file loads, directly or through others, with the chain of modules that loads it."""
    modules = _modules()
    chains = {_module_of(path): [_module_of(path)]}
    todo = [_module_of(path)]
    while todo:
        current = todo.pop()
        for name in sorted(_project_imports(modules[current])):
            if name not in chains:
                chains[name] = [*chains[current], name]
                todo.append(name)
    return chains


# --- pure cores ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PURE)
def test_pure_core_imports_no_io_library(path):
    assert (ROOT / path).is_file(), f"{path} is listed in PURE but does not exist: update the list"
    assert _io_imports(path) == []


@pytest.mark.parametrize("path", PURE)
def test_pure_core_reads_no_clock(path):
    assert _clock_reads(path) == []


@pytest.mark.parametrize("path", PURE)
def test_pure_core_reaches_no_io_through_other_modules(path):
    modules = _modules()
    problems = [
        f"{' -> '.join(chain)}: {problem}"
        for name, chain in sorted(_reached(path).items())
        if len(chain) > 1
        for problem in _io_imports(modules[name]) + _clock_reads(modules[name])
    ]
    assert problems == []


def test_the_checks_find_io_and_clocks(tmp_path):
    """The checks above are only worth something if they catch the forbidden things, however spelled."""
    sample = tmp_path / "sample.py"  # an absolute path: ROOT / it is itself
    sample.write_text(
        "import time as t\nfrom datetime import datetime, date\nfrom urllib import request\n"
        "def f():\n    from trio import current_time\n    import httpx.auth\n"
        "    return t.monotonic(), datetime.now(), date.today(), current_time()\n"
    )
    path = str(sample)
    assert _io_imports(path) == [f"{path}:3 imports urllib.request", f"{path}:5 imports trio",
                                 f"{path}:6 imports httpx"]
    assert sorted(line.split(" (")[1] for line in _clock_reads(path)) == [
        "datetime.date.today)", "datetime.datetime.now)", "time.monotonic)", "trio.current_time)"]


# --- small modules ---------------------------------------------------------------------------------


def test_no_module_is_longer_than_the_limit():
    lengths = {path: len((ROOT / path).read_text().splitlines()) for path in _all_files()}
    too_long = {path: n for path, n in lengths.items() if n > MAX_LINES and path not in LONG_MODULES}
    assert too_long == {}, f"split these into modules with one job each (limit {MAX_LINES} lines)"
    assert {path for path in LONG_MODULES if lengths.get(path, 0) <= MAX_LINES} == set(), \
        "these are short now (or gone): take them out of LONG_MODULES"


# --- no import cycles ------------------------------------------------------------------------------


def test_module_imports_have_no_cycle():
    graph = {name: _project_imports(path, module_level_only=True) - {name} for name, path in _modules().items()}
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as e:
        pytest.fail(f"modules import each other when loaded: {' -> '.join(reversed(e.args[1]))}")
