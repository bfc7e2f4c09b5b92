"""A payload cut into the chunk files of a fresh release directory, on every core, and the store's names for them."""

from __future__ import annotations

import errno
import os
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import blake3

from posswarm.chunks import CHUNK_AVG, ChunkStore, chunk_relpath, pack, spans
from posswarm.errors import PosswarmError
from posswarm.release_torrent import FileTree, file_tree

# BLAKE3, zstd, SHA-256 and the file syscalls all give up the GIL, so a chunk's whole path runs on
# the packing threads while the cutting thread only cuts (FastCDC's loop gives up the GIL too). A job
# is a batch of cuts: one future per chunk cost more in futures, conditions and thread hand-offs than
# BLAKE3 of the chunk (py-spy of a 420 MiB publish). The window bounds what is in flight (and the mmaps
# it keeps open) whatever the payload's size.
PACKERS = os.cpu_count() or 1
BATCH_BYTES = 16 * CHUNK_AVG
WINDOW = 4 * PACKERS

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Cut:
    """What a payload's chunks came to: each file's (digest, length) list, the stored sizes, what was new."""

    chunks: list[list[tuple[bytes, int]]]  # per source file, in order
    stored: dict[bytes, int]  # every chunk of the payload: its stored size
    new: dict[bytes, int]  # the chunks written here, new to the store: their stored size
    trees: dict[str, FileTree]  # every chunk file's v2 hashes, by its path below chunks/
    payload_blake3: bytes


class _Job:
    """One batch of cuts of one file, for a packing thread; ``claims`` (shared) says which job writes a chunk."""

    def __init__(self, claims: dict[bytes, object], tmp_root: str, store: ChunkStore, piece_size: int):
        self.claims, self.tmp_root, self.store, self.piece_size = claims, tmp_root, store, piece_size
        self.views: list[memoryview] = []
        self.chunks: list[tuple[bytes, int]] = []  # (digest, length), in order
        self.written: list[tuple[bytes, FileTree, bool]] = []  # (digest, tree, new to the store)

    def __call__(self) -> _Job:
        for view in self.views:
            digest = blake3.blake3(view).digest()
            self.chunks.append((digest, len(view)))
            # dict.setdefault is atomic under the GIL: exactly one cut claims a chunk the payload repeats.
            claim = object()  # not the view: a claim must not keep its file's mmap open to the end
            if self.claims.setdefault(digest, claim) is claim:
                self.written.append(self._place(digest, view))
        self.views = []  # let the file's mmap go once every job that viewed it is done
        return self

    def _place(self, digest: bytes, view: memoryview) -> tuple[bytes, FileTree, bool]:
        rel = chunk_relpath(digest)
        dest = f"{self.tmp_root}/{rel}"
        # The store's stored form, never a fresh one: one chunk, one file, in every release.
        size = _size_of(f"{self.store.root}/{rel}")
        if size is not None and size <= len(view) and self._link_stored(rel, digest, size):
            return digest, _hash_file(dest, size, self.piece_size), False
        return digest, _pack_into(dest, view, self.piece_size), True

    def _link_stored(self, rel: str, digest: bytes, size: int) -> bool:
        # The release directory is new and holds each chunk once, so one link(2) does it; anything unusual
        # (its first chunk in a directory, a vanished chunk, no hard links here) goes the store's careful way.
        try:
            os.link(f"{self.store.root}/{rel}", f"{self.tmp_root}/{rel}")
            return True
        except OSError:
            return self.store.link_into(digest, Path(self.tmp_root), size)


def cut_payload(paths: list[Path], tmp: Path, store: ChunkStore, report: Progress, work: int,
                piece_size: int, pool: ThreadPoolExecutor) -> Cut:
    """Cut every file of ``paths`` once into ``tmp/chunks/``: chunk lists, whole BLAKE3, what is new, the trees.

    New chunks are compressed and written, chunks the store holds are hard-linked, and every chunk file
    is hashed for the torrent, all on ``pool``. Nothing is synced here (``posswarm.fsync.sync_tree`` does it once).
    """
    claims: dict[bytes, object] = {}
    tmp_root = str(tmp)
    whole = ThreadPoolExecutor(max_workers=1, thread_name_prefix="whole")
    try:
        # The whole payload's BLAKE3 on its own thread, reading the files as the cutter does: on the
        # cutting thread it made cutting the publish's critical path (py-spy: 0.24 s of 1.9 s).
        hashed = whole.submit(_whole_blake3, paths)
        jobs: deque[tuple[int, Future]] = deque()  # (file index, the job), in cut order
        finished: list[tuple[int, _Job]] = []
        done = 0
        for index, path in enumerate(paths):
            job, batched = _Job(claims, tmp_root, store, piece_size), 0
            for view in _spans(path):
                job.views.append(view)
                batched += len(view)
                if batched >= BATCH_BYTES:
                    jobs.append((index, pool.submit(job)))
                    done += batched
                    report(done, work)
                    job, batched = _Job(claims, tmp_root, store, piece_size), 0
                    while len(jobs) > WINDOW:
                        i, f = jobs.popleft()
                        finished.append((i, f.result()))
            if job.views:
                jobs.append((index, pool.submit(job)))
                done += batched
                report(done, work)
        finished += [(i, f.result()) for i, f in jobs]
        payload_blake3 = hashed.result()
    finally:
        whole.shutdown(wait=True)
    chunks: list[list[tuple[bytes, int]]] = [[] for _ in paths]
    stored: dict[bytes, int] = {}
    new: dict[bytes, int] = {}
    trees: dict[str, FileTree] = {}
    for index, job in finished:
        chunks[index] += job.chunks
        for digest, tree, fresh in job.written:
            trees[chunk_relpath(digest).split("/", 1)[1]] = tree
            stored[digest] = tree.length
            if fresh:
                new[digest] = tree.length
    return Cut(chunks, stored, new, trees, payload_blake3)


def _spans(path: Path):
    try:
        yield from spans(path)
    except OSError as exc:
        raise _unreadable(path, exc) from None


def _whole_blake3(paths: list[Path]) -> bytes:
    hasher = blake3.blake3()
    for path in paths:
        try:
            hasher.update_mmap(path)  # mmap, GIL released; an empty file adds nothing
        except OSError as exc:
            raise _unreadable(path, exc) from None
    return hasher.digest()


def _unreadable(path: Path, exc: OSError) -> PosswarmError:
    return PosswarmError(f"payload file {path}: cannot read it ({exc.strerror or exc}; check permissions)")


def _pack_into(dest: str, content: memoryview, piece_size: int) -> FileTree:
    """Write chunk ``content`` in its stored form to ``dest``; the stored file's v2 hashes (and so its size).

    One open(2) that creates the file or fails (the publish's own fresh directory), one write, no stat,
    no fsync: the release is synced once, before anything names it (``posswarm.fsync.sync_tree``).
    """
    data = pack(content)
    try:
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    except FileNotFoundError:  # the first chunk of its 256 directories
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    return file_tree(data, piece_size)


def _hash_file(path: str, size: int, piece_size: int) -> FileTree:
    """The v2 hashes of a chunk file linked in from the store (already on disk: read it, on a packing thread)."""
    with open(path, "rb", buffering=0) as f:
        data = f.read(size + 1)
    if len(data) != size:  # the store's file changed under the publish: never hash a torrent file of another size
        raise OSError(errno.EIO, f"chunk file holds {len(data)} bytes, not {size}", path)
    return file_tree(data, piece_size)


def _size_of(path: str) -> int | None:
    """The size of the store's file ``path``, or None if it is absent (as ChunkStore.stored_size, without a Path)."""
    try:
        return os.stat(path).st_size
    except OSError:
        return None


def adopt_new(store: ChunkStore, tmp: Path, new: list[bytes], pool: ThreadPoolExecutor) -> list[Future]:
    """Give the store its names for the new chunk files of ``tmp``, on ``pool``; call only once they are durable.

    The store is trusted by size (``ChunkStore.has``): a name in it for a chunk a crash could still
    lose would let a later publish link a torn file into a signed release.
    """
    batch = 256
    return [pool.submit(_adopt, store, str(tmp), new[i:i + batch]) for i in range(0, len(new), batch)]


def _adopt(store: ChunkStore, tmp_root: str, digests: list[bytes]) -> None:
    store_root = str(store.root)
    for digest in digests:
        rel = chunk_relpath(digest)
        try:
            os.link(f"{tmp_root}/{rel}", f"{store_root}/{rel}")
        except OSError:  # a directory's first chunk, held already (another publish), no hard links here
            store.adopt(Path(f"{tmp_root}/{rel}"), digest)
