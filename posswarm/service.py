"""Run a long-lived service from a command: start it, stop it cleanly on SIGINT/SIGTERM, one-line errors."""

from __future__ import annotations

import signal
import sys
from collections.abc import Awaitable, Callable

import trio

from posswarm import logs
from posswarm.errors import PosswarmError

log = logs.get("service")


def run_until_signalled(start: Callable[..., Awaitable[None]], *, program: str) -> int:
    """``start(task_status=...)`` is a trio service; returns the process exit code.

    SIGINT and SIGTERM cancel it (systemd stops with SIGTERM); a PosswarmError while starting or
    running is printed as one line ``program: message`` and gives exit code 1, never a traceback.
    """

    async def main() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                await nursery.start(start)
                async for signum in signals:
                    log.info("stopping", signal=signal.Signals(signum).name)
                    nursery.cancel_scope.cancel()
                    break

    try:
        trio.run(main)
    except PosswarmError as exc:
        print(f"{program}: {exc}", file=sys.stderr)
        return 1
    except BaseExceptionGroup as group:
        expected, unexpected = group.split(PosswarmError)
        if unexpected is not None:
            raise
        for exc in leaves(expected):
            print(f"{program}: {exc}", file=sys.stderr)
        return 1
    return 0


def leaves(group: BaseExceptionGroup):
    """The exceptions inside (nested) exception groups, in order: what a person should be told about."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from leaves(exc)
        else:
            yield exc
