"""The driver of the streaming install: chunk files the torrent reports complete go into the release's staged
payload from a worker thread as they arrive, so the install at the end writes only what never streamed."""

from __future__ import annotations

import trio

from posswarm import logs
from posswarm.manifest import ChunkRef
from posswarm.staged_payload import StagedPayload

log = logs.get("node")


class PayloadStream:
    """One release's payload being written while it downloads. ``completed`` is fed from the torrent events;
    ``check_rest`` and ``hand_over`` are what the verify and the install await."""

    def __init__(self, staged: StagedPayload, release_dir) -> None:
        self.staged = staged
        self.release_dir = release_dir
        self.streamed = 0  # chunks written as they were reported
        self.late = 0  # chunks that did not check out when reported (libtorrent held them in memory): taken at the end
        self._pending: list[tuple[ChunkRef, bytes | None]] = []  # None: read it from its file
        self._asked: dict[int, ChunkRef] = {}  # pieces read_piece was asked for
        self._wake = trio.Event()
        self._lock = trio.Lock()  # one worker thread on the payload at a time
        self._scope = trio.CancelScope()
        self._handed_over = False

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Take reported chunks until stopped or handed over; started(self). Stopped, the staging is thrown away."""
        with self._scope:
            task_status.started(self)
            try:
                while True:
                    await self._wake.wait()
                    self._wake = trio.Event()
                    await self._take_pending()
            finally:
                with trio.CancelScope(shield=True):
                    async with self._lock:
                        if not self._handed_over:
                            await trio.to_thread.run_sync(self.staged.abort)

    def completed(self, name: str, piece: int = -1) -> bool:
        """The torrent file ``name`` (a chunk's BLAKE3 in hex) is complete; True when its one ``piece`` should be
        read from the torrent's memory (then ``arrived``), False when it is read from its file or not wanted."""
        try:
            digest = bytes.fromhex(name)
        except ValueError:
            return False
        ref = self.staged.plan.refs.get(digest)
        if ref is None or not self.staged.plan.wants(digest):
            return False
        if piece >= 0:
            self._asked[piece] = ref
            return True
        self._pending.append((ref, None))
        self._wake.set()
        return False

    def arrived(self, piece: int, data: bytes) -> None:
        """The bytes of a piece asked for in ``completed``."""
        ref = self._asked.pop(piece, None)
        if ref is not None:
            self._pending.append((ref, data))
            self._wake.set()

    async def check_rest(self) -> list[ChunkRef]:
        """Every chunk not written yet (linked from an older release, reported early, never reported) is read,
        checked and written now; the ones that cannot be used."""
        await self._take_pending()
        async with self._lock:
            bad = await trio.to_thread.run_sync(self.staged.fill, self.release_dir)
        return [ref for ref, _ in bad]

    async def hand_over(self) -> StagedPayload:
        """Stop streaming and give the staged payload to the installer, who finishes or aborts it."""
        await self._take_pending()
        async with self._lock:
            self._handed_over = True
            self._scope.cancel()
        plan = self.staged.plan
        log.info("payload.streamed", release=plan.manifest.release_id, chunks=len(plan.refs), streamed=self.streamed,
                 late=self.late)
        return self.staged

    def stop(self) -> None:
        """Stop streaming and throw the staging away (the release will not be installed from it)."""
        self._scope.cancel()

    async def _take_pending(self) -> None:
        async with self._lock:
            batch, self._pending = self._pending, []
            if batch:
                await trio.to_thread.run_sync(self._take, batch)

    def _take(self, batch: list[tuple[ChunkRef, bytes | None]]) -> None:
        for ref, data in batch:
            problem = self.staged.take(ref, self.release_dir) if data is None else self.staged.put(ref, data)
            if problem is None:
                self.streamed += 1
            else:
                self.late += 1
