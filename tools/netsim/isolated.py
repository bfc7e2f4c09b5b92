"""Run one sales scenario in a network namespace of its own, so its wire faults never touch the host's network.

``run_scenario_isolated`` (outside) makes the namespace, runs ``python -m tools.netsim.isolated``
inside it and removes it (and whatever still runs there) afterwards, whatever happened.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import traceback
from pathlib import Path

import trio

from posswarm.errors import PosswarmError
from tools.netsim import netns

PREFIX = "psw-"


def in_own_namespace() -> bool:
    """True only inside a namespace this module made (named PREFIX...), never in the host's."""
    try:
        name = netns.identify(os.getpid())
    except PosswarmError:
        return False
    return name.startswith(PREFIX)


def require_own_namespace(what: str) -> None:
    if not in_own_namespace():
        raise PosswarmError(f"{what}: refusing to change iptables/tc in the host's network namespace;"
                            " run it through tools.netsim.isolated (posswarm-bench does)")


async def run_scenario_isolated(root: Path, **scenario) -> dict:
    """``tools.bench_sales.run_scenario(root, **scenario)`` in a fresh namespace; returns its result."""
    if os.geteuid() != 0:
        raise PosswarmError("wire faults need root to create a network namespace (run it with sudo)")
    name = f"{PREFIX}{secrets.token_hex(4)}"
    root.mkdir(parents=True, exist_ok=True)
    await trio.to_thread.run_sync(netns.apply, [["ip", "netns", "add", name]])
    try:
        with open(root / "isolated.log", "ab") as log:
            done = await trio.run_process(
                [*netns.exec_prefix(name), sys.executable, "-m", "tools.netsim.isolated", str(root), json.dumps(scenario)],
                stdin=subprocess.DEVNULL, capture_stdout=True, stderr=log, check=False)
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(netns.destroy, [name])
    if done.returncode != 0:
        lines = (root / "isolated.log").read_text(errors="replace").strip().splitlines()
        raise PosswarmError(f"sales scenario in namespace {name} failed (exit {done.returncode}):"
                            f" {lines[-1][:300] if lines else 'no output'}; see {root / 'isolated.log'}")
    try:
        return json.loads(done.stdout.decode().strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise PosswarmError(f"sales scenario in namespace {name}: no result printed; see {root / 'isolated.log'}") from None


def main() -> int:
    from tools.bench_sales import run_scenario  # the scenario imports this module for its own --wire path

    require_own_namespace("sales scenario")
    root, scenario = Path(sys.argv[1]), json.loads(sys.argv[2])
    try:
        result = trio.run(lambda: run_scenario(root, **scenario))
    except Exception as exc:
        traceback.print_exc()
        print(f"sales scenario: {_first_cause(exc)}", file=sys.stderr)  # the line the outside reports
        return 1
    print(json.dumps(result))
    return 0


def _first_cause(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"[:300]


if __name__ == "__main__":
    sys.exit(main())
