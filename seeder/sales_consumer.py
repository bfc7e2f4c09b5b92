"""``posswarm-seeder sales stream``: central's sales stream to an output, page by page, with the cursor committed to
its file (write, fsync, rename) only once the page before it is flushed: a consumer killed at any moment reads
again at most the page it had not committed, and never skips one."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import time
from pathlib import Path
from typing import IO

import httpx

from posswarm.errors import PosswarmError
from seeder.sales_stream import MAX_CURSOR

MAX_PAGE_BYTES = 64 << 20  # a full page of 10,000 sales is ~3 MB; far above it is not central answering
RETRY_MAX_S = 30.0


def read_cursor(path: Path) -> str:
    """The committed cursor ("" when the file does not exist yet: the stream's start)."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CURSOR + 2)
    except FileNotFoundError:
        return ""
    except OSError as exc:
        raise PosswarmError(f"sales stream: cursor file {path}: cannot read it ({exc.strerror})") from None
    cursor = data.decode("ascii", errors="replace").strip()
    if len(data) > MAX_CURSOR + 1 or not cursor or not cursor.isprintable() or " " in cursor:
        raise PosswarmError(f"sales stream: cursor file {path} holds no cursor; restore the file (it names the last "
                            "sale the consumer took), or remove it to read every sale again")
    return cursor


@contextlib.contextmanager
def sole_consumer(path: Path):
    """Held while one consumer uses the cursor file: a second one on it would commit cursors over the first's."""
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PosswarmError(f"sales stream: another consumer is using cursor file {path}; stop it first, or "
                                "give this one a cursor file of its own") from None
        yield


def commit_cursor(path: Path, cursor: str) -> None:
    """Replace the cursor file in one step: a crash leaves the old cursor or the new one, never half of either."""
    part = path.with_name(path.name + ".part")
    with open(part, "w", encoding="ascii") as f:
        f.write(cursor + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(part, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives power loss
    finally:
        os.close(directory)


def split_page(body: bytes, url: str) -> tuple[list[str], str, bool]:
    """The sale lines of a page, its ``next`` cursor and whether more are waiting; PosswarmError if it is not whole."""
    lines = body.decode("utf-8", errors="replace").splitlines()
    try:
        last = json.loads(lines[-1]) if lines else None
        sales = [line for line in lines[:-1] if isinstance(json.loads(line), dict)]
    except ValueError:
        last, sales = None, []
    if (not isinstance(last, dict) or not isinstance(last.get("next"), str) or last.get("sales") != len(lines) - 1
            or len(sales) != len(lines) - 1 or not isinstance(last.get("more"), bool)):
        raise PosswarmError(f"sales stream from {url}: the page came incomplete or malformed; nothing of it was "
                            "taken, read it again")
    return sales, last["next"], last["more"]


def _page(client: httpx.Client, url: str, headers: dict, cursor: str, limit: int) -> bytes:
    params = {"limit": str(limit), **({"after": cursor} if cursor else {})}
    with client.stream("GET", url, params=params, headers=headers) as response:
        body = bytearray()
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) > MAX_PAGE_BYTES:
                raise PosswarmError(f"sales stream from {url}: a page over {MAX_PAGE_BYTES >> 20} MiB; is this "
                                    "a posswarm seeder?")
    if response.status_code != 200:
        try:
            reason = json.loads(body).get("error", "")
        except (ValueError, AttributeError):
            reason = bytes(body[:300]).decode(errors="replace")
        raise _Refused(f"sales stream from {url}: refused (HTTP {response.status_code}: {str(reason)[:300]})",
                       response.status_code)
    return bytes(body)


class _Refused(PosswarmError):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def consume(client: httpx.Client, url: str, headers: dict, cursor_file: Path, out: IO[str], *, limit: int,
            follow: bool, poll_s: float) -> int:
    """Pages from the committed cursor on, into ``out``; the number of sales written. Without ``follow`` it stops
    at the first page that is not full; with it, it waits ``poll_s`` and asks again, and rides out central's
    restarts (connection errors, 5xx) with backoff. A refusal (4xx) stops it either way."""
    cursor, written, wait = read_cursor(cursor_file), 0, poll_s
    while True:
        try:
            sales, after, more = split_page(_page(client, url, headers, cursor, limit), url)
        except (httpx.HTTPError, PosswarmError) as exc:
            if not follow or isinstance(exc, _Refused) and exc.status < 500:
                if isinstance(exc, httpx.HTTPError):
                    raise PosswarmError(f"sales stream from {url}: {type(exc).__name__} ({exc}); is the seeder "
                                        "running?") from None
                raise
            print(f"sales stream: {exc}; again in {wait:.1f} s", file=sys.stderr)
            time.sleep(wait)
            wait = min(wait * 2, RETRY_MAX_S)
            continue
        wait = poll_s
        if sales:
            out.write("\n".join(sales) + "\n")
            out.flush()
            _sync(out)
        if after != cursor:
            commit_cursor(cursor_file, after)  # only now: every sale up to it is out
            cursor = after
        written += len(sales)
        if not more:
            if not follow:
                return written
            time.sleep(poll_s)


def _sync(out: IO[str]) -> None:
    """To the disk, when ``out`` is a file (a pipe or terminal has no disk to reach)."""
    try:
        os.fsync(out.fileno())
    except (OSError, ValueError, AttributeError):
        pass
