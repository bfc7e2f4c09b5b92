"""The unit cost of the streaming install: a published payload written by the node's one writer, chunks in a
shuffled (torrent-like) order, from their stored bytes as libtorrent hands them over; MB/s and CPU seconds.

    python -m tools.bench_staging --image-mb 1024 --payload real
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

from posswarm import install
from posswarm.chunks import chunk_relpath
from posswarm.keys import generate_keypair, load_private_key
from posswarm.staged_payload import StagedPayload
from seeder.publish import publish
from tools import payloads


def measure(workdir: Path, image_mb: int, kind: str) -> dict:
    image = payloads.first(workdir / "payload", image_mb, payloads.check_kind(kind))
    private, _ = generate_keypair(workdir / "keys")
    manifest = publish(image, name="pos-image", version="1.0", private_key=load_private_key(private),
                       out=workdir / "releases")
    release_dir = workdir / "releases" / "pos-image" / "1.0"
    refs = manifest.unique_chunks()
    random.Random(1).shuffle(refs)
    root = workdir / "installed" / "pos-image"
    wall, cpu = time.perf_counter(), time.process_time()
    staged = StagedPayload.into_directory(manifest, install.staging_of(root, "1.0"))
    for ref in refs:  # as the stream gets them: stored bytes out of libtorrent's memory (here: the page cache)
        assert staged.put(ref, (release_dir / chunk_relpath(ref.digest)).read_bytes()) is None
    streamed_s = time.perf_counter() - wall
    tail = time.perf_counter()
    install.assemble(manifest, release_dir, root, staged)  # what is left at the end: fsync, check, rename
    end = time.perf_counter()
    size = manifest.total_size
    return {"image_bytes": size, "stored_bytes": manifest.stored_size, "chunks": len(refs), "payload": kind,
            "writer_mb_s": round(size / 1e6 / streamed_s, 1), "writer_s": round(streamed_s, 3),
            "finish_s": round(end - tail, 3), "cpu_s": round(time.process_time() - cpu, 3),
            "load_average": os.getloadavg()[0]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.bench_staging", description=__doc__.splitlines()[0])
    p.add_argument("--image-mb", type=int, default=1024)
    p.add_argument("--payload", default="real", choices=payloads.KINDS)
    args = p.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="posswarm-bench-staging-"))
    try:
        print(json.dumps(measure(workdir, args.image_mb, args.payload)))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
