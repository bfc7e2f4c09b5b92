"""The one writer of a payload: each verified chunk written at its offsets into a staging directory or a boot slot,
the payload BLAKE3 taken in order as the written prefix grows. Blocking: run it from a thread."""

from __future__ import annotations

import os
import shutil
import stat
from collections import OrderedDict
from pathlib import Path

import blake3

from posswarm.chunks import ChunkError, chunk_relpath, read_content, unpack
from posswarm.errors import PosswarmError
from posswarm.manifest import ChunkRef, Manifest, safe_mode
from posswarm.staging_plan import Place, StagingPlan

# Content of a chunk written ahead of the hashed prefix is kept for the payload hash up to this much, and
# read back from the page cache past it: libtorrent fetches rarest first, so without a bound a device would
# hold most of the image in memory. Reading it back costs little (docs/benchmarks.md, issue 15 section). At 8 MiB a
# till of 12 peaked at 81-94 MiB RssAnon (48 MiB image, posswarm-netsim); issue 15 allows a device 80.
KEEP_BYTES = 2 << 20
# An app payload may hold thousands of files, past the process's file limit (1024 by default): this many stay open.
OPEN_FILES = 64
_NEW = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class StagedPayload:
    """A payload being written: open files, what is written, the payload BLAKE3 so far. ``finish`` or ``abort`` once."""

    def __init__(self, manifest: Manifest, *, where: Path, directory: bool, fd: int | None = None) -> None:
        self.manifest = manifest
        self.plan = StagingPlan(manifest)
        self.where = where
        self._directory = directory
        self._open: OrderedDict[int, int] = OrderedDict() if fd is None else OrderedDict({0: fd})  # file index -> fd
        self._hash = blake3.blake3()
        self._kept: dict[bytes, bytes] = {}
        self._kept_bytes = 0

    @classmethod
    def into_directory(cls, manifest: Manifest, staging: Path) -> StagedPayload:
        """A fresh ``staging`` directory (what an earlier, interrupted run left there is removed) with every
        payload file created private and at its full size, so chunks can land anywhere in it."""
        shutil.rmtree(staging, ignore_errors=True)
        staging.parent.mkdir(parents=True, exist_ok=True)
        staging.mkdir()
        try:
            for entry in manifest.files:
                target = staging / entry.path
                target.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(target, _NEW, 0o600)  # never through a link: the directory is ours alone
                try:
                    os.ftruncate(fd, entry.size)
                finally:
                    os.close(fd)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return cls(manifest, where=staging, directory=True)

    @classmethod
    def into_slot(cls, manifest: Manifest, slot: Path) -> StagedPayload:
        """Boot slot ``slot`` (a partition, or a file cut to the image's size) opened for the image."""
        m = manifest
        if len(m.files) != 1:
            raise PosswarmError(f"release {m.release_id}: a {m.kind} release of {len(m.files)} files is not a disk "
                                "image (only kind=image goes into a boot slot)")
        fd = os.open(slot, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            block = stat.S_ISBLK(os.fstat(fd).st_mode)
            room = os.lseek(fd, 0, os.SEEK_END) if block else None
            if room is not None and room < m.total_size:
                raise PosswarmError(f"release {m.release_id}: image of {m.total_size} bytes does not fit slot {slot} "
                                    f"({room} bytes); make the slot partitions larger")
            if not block:  # a partition keeps what lies past the image: nothing reads past total_size
                os.ftruncate(fd, m.total_size)
        except BaseException:
            os.close(fd)
            raise
        return cls(m, where=slot, directory=False, fd=fd)

    # ---- chunks in --------------------------------------------------------------------------------------

    def take(self, ref: ChunkRef, release_dir: Path) -> str | None:
        """Read chunk ``ref`` from ``release_dir`` once, check it and write it; why it cannot be used, or None."""
        if not self.plan.wants(ref.digest):
            return None
        try:
            content = read_content(release_dir / chunk_relpath(ref.digest), ref.size, ref.length)
        except FileNotFoundError:
            return "is missing"
        except OSError as exc:
            return f"cannot be read ({exc.strerror})"
        except ChunkError as exc:
            return str(exc)
        return self._check_and_write(ref, content)

    def put(self, ref: ChunkRef, stored: bytes) -> str | None:
        """Chunk ``ref`` from its stored bytes as the torrent holds them: checked and written; why not, or None."""
        if not self.plan.wants(ref.digest):
            return None
        if len(stored) != ref.size:
            return f"has {len(stored)} stored bytes, not {ref.size}"
        try:
            content = unpack(stored, ref.length)
        except ChunkError as exc:
            return str(exc)
        return self._check_and_write(ref, content)

    def _check_and_write(self, ref: ChunkRef, content: bytes) -> str | None:
        if blake3.blake3(content).digest() != ref.digest:
            return "has content whose BLAKE3 does not match the manifest"
        self._write(ref.digest, content)
        return None

    def fill(self, release_dir: Path) -> list[tuple[ChunkRef, str]]:
        """Take every chunk not written yet (those linked from older releases, those no alert reported);
        the ones that cannot be used, with the reason."""
        bad = []
        for ref in self.plan.left():
            problem = self.take(ref, release_dir)
            if problem is not None:
                bad.append((ref, problem))
        return bad

    def _write(self, digest: bytes, content: bytes) -> None:
        for place in self.plan.places[digest]:
            _pwrite_all(self._fd(place.file), content, place.offset)
        for place in self.plan.put(digest):
            self._hash.update(content if place.digest == digest else self._content_of(place))
            if place.digest in self._kept and not self.plan.needed_later(place.digest):
                self._kept_bytes -= len(self._kept.pop(place.digest))
        if self.plan.needed_later(digest) and self._kept_bytes + len(content) <= KEEP_BYTES:
            self._kept[digest] = content
            self._kept_bytes += len(content)

    def _content_of(self, place: Place) -> bytes:
        kept = self._kept.get(place.digest)
        if kept is not None:
            return kept
        data = os.pread(self._fd(place.file), place.length, place.offset)
        if len(data) != place.length:
            raise PosswarmError(f"{self.where}: read {len(data)} of {place.length} bytes just written at "
                                f"{place.offset} (a failing disk?)")
        return data

    # ---- the end ------------------------------------------------------------------------------------------

    def finish(self, release_dir: Path) -> None:
        """Write what is left, fsync, and check the payload BLAKE3 against the signed one; PosswarmError otherwise."""
        m = self.manifest
        bad = self.fill(release_dir)
        if bad:
            ref, problem = bad[0]
            raise PosswarmError(f"release {m.release_id}: chunk {ref.hex[:16]} {problem} (it will be fetched again)")
        for index, entry in enumerate(m.files):
            fd = self._fd(index)
            if self._directory:
                os.fchmod(fd, safe_mode(entry.mode))
            os.fsync(fd)  # the file's dirty pages, whichever descriptor wrote them
        if self._hash.digest() != m.payload_blake3:
            raise PosswarmError(f"release {m.release_id}: assembled payload BLAKE3 does not match the manifest "
                                "(a chunk on disk is corrupt; it will be checked and fetched again)")
        self.close()

    def close(self) -> None:
        _close(list(self._open.values()))
        self._open.clear()
        self._kept.clear()

    def abort(self) -> None:
        """Close and throw away a staging directory (a slot is left as it is: its environment says it is unwritten)."""
        self.close()
        if self._directory:
            shutil.rmtree(self.where, ignore_errors=True)


    def _fd(self, index: int) -> int:
        fd = self._open.get(index)
        if fd is not None:
            self._open.move_to_end(index)
            return fd
        fd = os.open(self.where / self.manifest.files[index].path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        self._open[index] = fd
        if len(self._open) > OPEN_FILES:
            os.close(self._open.popitem(last=False)[1])
        return fd


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def _close(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
