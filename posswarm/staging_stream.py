"""The driver of the streaming install: chunk files the torrent reports complete go into the release's staged
payload from a worker thread as they arrive, so the install at the end writes only what never streamed."""

from __future__ import annotations

import trio

from posswarm import logs
from posswarm.errors import PosswarmError
from posswarm.manifest import ChunkRef
from posswarm.staged_payload import StagedPayload

log = logs.get("node")
# Stored bytes asked of libtorrent and not yet written, at most: a writer that falls behind (a loaded till)
# leaves the rest to be read from the files at the end rather than hold the image in memory.
QUEUE_BYTES = 16 << 20
# Chunks are reported one at a time (a real image's average ~16 KiB stored); a worker-thread hop per chunk cost
# more than its decode, hash and write. Reported chunks are gathered this long and written in one hop. The end
# does not wait for it: check_rest and hand_over take what is pending at once.
GATHER_S = 0.05


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
        self._queued = 0  # stored bytes asked for or waiting in _pending
        self._wake = trio.Event()
        self._lock = trio.Lock()  # one worker thread on the payload at a time
        self._scope = trio.CancelScope()
        self._handed_over = False
        self.failed: str | None = None  # why writing stopped (a full disk): the release is then installed the usual way
        self._last_chunk_at: float | None = None  # trio's clock when the last chunk was reported

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Take reported chunks until stopped or handed over; started(self). Stopped, the staging is thrown away."""
        with self._scope:
            task_status.started(self)
            try:
                while True:
                    await self._wake.wait()
                    await trio.sleep(GATHER_S)
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
        if ref is None or not self.staged.plan.wants(digest) or self.failed is not None:
            return False
        if piece >= 0:
            if self._queued + ref.size > QUEUE_BYTES:
                return False  # taken from its file at the end
            self._asked[piece] = ref
            self._queued += ref.size
            return True
        self._last_chunk_at = trio.current_time()
        self._pending.append((ref, None))
        self._wake.set()
        return False

    def arrived(self, piece: int, data: bytes) -> None:
        """The bytes of a piece asked for in ``completed``."""
        ref = self._asked.pop(piece, None)
        self._last_chunk_at = trio.current_time()
        if ref is not None and len(data) != ref.size:
            self._queued -= ref.size  # not the piece asked for: left for the end
        elif ref is not None:
            self._pending.append((ref, data))
            self._wake.set()

    async def check_rest(self) -> list[ChunkRef] | None:
        """Every chunk not written yet (linked from an older release, reported early, never reported) is read,
        checked and written now; the ones that cannot be used. None when writing failed: check them all."""
        await self._take_pending()
        bad = await self._guarded(self.staged.fill, self.release_dir)
        return None if self.failed is not None else [ref for ref, _ in bad]

    async def hand_over(self) -> StagedPayload:
        """Stop streaming and give the staged payload to the installer, who finishes or aborts it."""
        await self._take_pending()
        async with self._lock:
            self._handed_over = True
            self._scope.cancel()
        plan = self.staged.plan
        since = None if self._last_chunk_at is None else round(trio.current_time() - self._last_chunk_at, 3)
        log.info("payload.streamed", release=plan.manifest.release_id, chunks=len(plan.refs), streamed=self.streamed,
                 late=self.late, last_chunk_s_ago=since)
        return self.staged

    def stop(self) -> None:
        """Stop streaming and throw the staging away (the release will not be installed from it)."""
        self._scope.cancel()

    async def _take_pending(self) -> None:
        async with self._lock:
            batch, self._pending = self._pending, []
            self._queued -= sum(ref.size for ref, data in batch if data is not None)
        if batch:
            await self._guarded(self._take, batch)

    async def _guarded(self, work, *args):
        """``work(*args)`` in a worker thread, unless writing failed already; a failure to write is remembered."""
        async with self._lock:
            if self.failed is not None:
                return None
            try:
                return await trio.to_thread.run_sync(work, *args)
            except (OSError, PosswarmError) as exc:
                self.failed = str(exc)
                self._pending.clear()
                log.warning("payload.stream_failed", release=self.staged.manifest.release_id, reason=self.failed)
                self._scope.cancel()  # the staging goes at once: on a full disk, libtorrent needs the room
                return None

    def _take(self, batch: list[tuple[ChunkRef, bytes | None]]) -> None:
        for ref, data in batch:
            if not self.staged.plan.wants(ref.digest):
                continue
            problem = self.staged.take(ref, self.release_dir) if data is None else self.staged.put(ref, data)
            if problem is None:
                self.streamed += 1
            else:
                self.late += 1
