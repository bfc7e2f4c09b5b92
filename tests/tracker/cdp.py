"""A real headless Chromium driven over its DevTools protocol (a websocket): load a page, time it, read it, screenshot it."""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from trio_websocket import open_websocket_url

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--remote-debugging-port=0", "--remote-allow-origins=*"]
needs_chromium = pytest.mark.skipif(shutil.which("chromium") is None,
                                    reason="Debian chromium is not installed (CI installs it)")


class Page:
    """One tab; every call waits for its own answer and keeps the events that arrive meanwhile."""

    def __init__(self, socket, session: str | None) -> None:
        self._socket, self._session = socket, session
        self._ids = itertools.count(1)
        self._events: list[dict] = []

    async def call(self, method: str, **params) -> dict:
        number = next(self._ids)
        message = {"id": number, "method": method, "params": params}
        if self._session is not None:
            message["sessionId"] = self._session
        await self._socket.send_message(json.dumps(message))
        while True:
            message = json.loads(await self._socket.get_message())
            if message.get("id") == number:
                if "error" in message:
                    raise AssertionError(f"chromium {method}: {message['error']}")
                return message.get("result", {})
            self._events.append(message)

    async def event(self, method: str) -> dict:
        while True:
            for i, message in enumerate(self._events):
                if message.get("method") == method:
                    return self._events.pop(i).get("params", {})
            self._events.append(json.loads(await self._socket.get_message()))

    async def open(self, url: str) -> None:
        """Navigate and wait for the load event (a form submit or a redirect: use ``loaded``)."""
        self._events.clear()
        await self.call("Page.navigate", url=url)
        await self.event("Page.loadEventFired")

    async def loaded(self) -> None:
        await self.event("Page.loadEventFired")

    async def js(self, expression: str):
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"chromium: {expression!r} threw {result['exceptionDetails']}")
        return result["result"].get("value")

    async def viewport(self, width: int, height: int) -> None:
        await self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                        mobile=False)

    async def timings(self) -> dict:
        """Milliseconds from the navigation's start to the first byte, the DOM ready and the load event; the bytes."""
        return await self.js("""(() => {
            const n = performance.getEntriesByType('navigation')[0];
            return {first_byte: n.responseStart, dom_ready: n.domContentLoadedEventEnd, load: n.loadEventEnd,
                    bytes: n.transferSize};
        })()""")

    async def overflow(self) -> int:
        """Pixels the page is wider than its window (0 = no horizontal scroll bar)."""
        return await self.js("document.documentElement.scrollWidth - document.documentElement.clientWidth")

    async def screenshot(self, path: Path, width: int) -> None:
        """The whole page (up to 6,000 px tall) as a PNG."""
        height = min(6000, await self.js("document.documentElement.scrollHeight"))
        await self.viewport(width, height)
        shot = await self.call("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(shot["data"]))


@asynccontextmanager
async def chromium():
    """A fresh headless Chromium (its own profile) and one tab in it, closed afterwards."""
    # Chromium's renderer and utility processes outlive a SIGKILL of the browser for a moment and still write into
    # the profile (seen: "Directory not empty: 'Default'" when the directory was removed): the whole process group
    # is killed, and a file one of them wrote as it died does not fail the test.
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        process = await trio.lowlevel.open_process(["chromium", *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                                   start_new_session=True)
        try:
            seen = b""
            with trio.fail_after(60):
                while not (found := re.search(rb"DevTools listening on (ws://\S+)", seen)):
                    chunk = await process.stderr.receive_some(65536)
                    if not chunk:
                        raise AssertionError(f"chromium exited: {seen.decode(errors='replace')}")
                    seen += chunk
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_drain, process.stderr)
                async with open_websocket_url(found.group(1).decode(), max_message_size=64 << 20) as socket:
                    browser = Page(socket, None)
                    target = (await browser.call("Target.createTarget", url="about:blank"))["targetId"]
                    session = (await browser.call("Target.attachToTarget", targetId=target, flatten=True))["sessionId"]
                    page = Page(socket, session)
                    page._ids = browser._ids
                    await page.call("Page.enable")
                    yield page
                nursery.cancel_scope.cancel()
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            with trio.CancelScope(shield=True):
                await process.wait()


async def _drain(stream) -> None:  # a full stderr pipe would stall Chromium
    async for _chunk in stream:
        pass
