"""Run a function on a forked copy of the tracker and read back its bytes: heavy reads that share no GIL with announces."""

from __future__ import annotations

import os
import signal
import traceback
from collections.abc import Callable

import trio

from posswarm.errors import PosswarmError

READ_CHUNK = 1 << 20


async def run(work: Callable[[], bytes]) -> bytes:
    """``work()`` in a child made by fork(), which sees the tracker's memory as of now (copy-on-write).

    A worker thread would share the GIL with the loop answering announces, and one C call of a
    20,000-node document (json.dumps) holds it for ~0.4 s; a child holds nobody's GIL. The
    fork itself copies page tables only (a few ms); the child closes every descriptor but its
    pipe, never touches trio, never logs, and leaves with os._exit, so nothing of the parent's
    runs twice.
    """
    readable, writable = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        status = 1
        try:
            # The tracker's sockets stay the tracker's: a copy held here would keep every connection
            # the tracker closes open (no FIN) until this child leaves. Ctrl-C is the tracker's to
            # handle (this child then finds the pipe closed); SIGTERM (systemd stopping the unit) ends it.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.closerange(3, writable)
            os.closerange(writable + 1, os.sysconf("SC_OPEN_MAX"))
            view = memoryview(work())
            while view:
                view = view[os.write(writable, view):]
            status = 0
        except BrokenPipeError:
            pass  # the tracker stopped reading (a reader went away, or it is shutting down)
        except BaseException:
            traceback.print_exc()  # to the tracker's stderr: a bug of ours, worth its traceback
        finally:
            os._exit(status)
    os.close(writable)
    chunks, read_all = [], False
    try:
        async with trio.lowlevel.FdStream(readable) as stream:
            while chunk := await stream.receive_some(READ_CHUNK):
                chunks.append(chunk)
        read_all = True
    finally:
        if not read_all:  # cancelled (the tracker stopping, the reader gone): the child's work is wasted
            os.kill(pid, signal.SIGKILL)
        with trio.CancelScope(shield=True):  # it has left or is leaving: the wait is short
            _, status = await trio.to_thread.run_sync(os.waitpid, pid, 0)
    if status != 0:
        raise PosswarmError(f"tracker: the stats snapshot process failed (wait status {status}); see the tracker log")
    return b"".join(chunks)
