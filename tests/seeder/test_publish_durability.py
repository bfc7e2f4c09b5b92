"""A real publish's syscalls, traced: chunk files and metadata durable before the store names them, before the release appears."""

import re
import shutil
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace (apt-get install strace)")

MiB = 1 << 20
CALL = re.compile(r"^(\d+) +(\w+)\((.*)")
RESUMED = re.compile(r"^(\d+) +<\.\.\. (\w+) resumed>")


def traced(tmp_path, program: str) -> list[tuple[int, int, str, str]]:
    """Run ``program`` under strace: (started, finished, syscall, arguments) per call, indexes into the log."""
    log = tmp_path / "strace.log"
    subprocess.run(["strace", "-f", "-y", "-s", "0", "-o", str(log),
                    "-e", "trace=openat,write,link,linkat,rename,renameat,renameat2,syncfs,fsync,fdatasync",
                    sys.executable, "-c", textwrap.dedent(program)], check=True, cwd=tmp_path, timeout=300)
    calls, open_calls = [], {}
    for i, line in enumerate(log.read_text().splitlines()):
        if m := RESUMED.match(line):
            start, name, args = open_calls.pop(int(m.group(1)))
            calls.append((start, i, name, args + line[m.end():]))
        elif m := CALL.match(line):
            if line.endswith("<unfinished ...>"):
                open_calls[int(m.group(1))] = (i, m.group(2), m.group(3))
            else:
                calls.append((i, i, m.group(2), m.group(3)))
    return calls


PUBLISH = """
    import random
    from pathlib import Path
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from seeder.publish import publish_release
    rng = random.Random(14)
    text = b" ".join(rng.randbytes(rng.randint(2, 8)).hex().encode() for _ in range(400_000))
    Path("v1.img").write_bytes(text[:3 << 20])
    Path("v2.img").write_bytes(text[:1 << 20] + rng.randbytes(100_000) + text[1 << 20:3 << 20])
    key = Ed25519PrivateKey.generate()
    publish_release(Path("v1.img"), name="pos-os", version="1", private_key=key, out=Path("rel"))
    print("second", flush=True)
    publish_release(Path("v2.img"), name="pos-os", version="2", private_key=key, out=Path("rel"))
"""


def test_a_release_is_durable_before_the_store_names_its_chunks_and_before_it_appears(tmp_path):
    calls = traced(tmp_path, PUBLISH)
    syncs = [c for c in calls if c[2] in ("syncfs", "fsync") and ".publish-pos-os-2-" in c[3]]
    assert syncs, "no sync of the release directory"
    sync_start, sync_end = min(c[0] for c in syncs), max(c[1] for c in syncs)
    second = [c for c in calls if ".publish-pos-os-2-" in c[3]]

    # (1) Everything the release holds is written, and the write finished, before it is synced.
    made = [c for c in second if c[2] in ("openat", "write", "link", "linkat") and ".publish-pos-os-2-" in target(c)
            and (c[2] != "openat" or "O_CREAT" in c[3])]
    chunk_files = [c for c in made if "/chunks/" in target(c)]
    metadata = [c for c in made if c[2] == "write" and re.search(r"/(manifest\.msgpack|release\.torrent)$", target(c))]
    assert len(chunk_files) > 80 and len(metadata) >= 2
    assert sum(c[2] in ("link", "linkat") for c in chunk_files) > 70  # v1's chunks come from the store
    assert max(c[1] for c in made) < sync_start

    # (2) The store gets names for the new chunks only once they are durable.
    store_names = [c for c in second if c[2] in ("link", "linkat") and "/.chunks/chunks/" in target(c)]
    assert len(store_names) >= 3 and min(c[0] for c in store_names) > sync_end

    # (3) The release appears (its rename) only after that: the manifest never names a chunk a crash could lose.
    (rename,) = [c for c in second if c[2].startswith("rename") and target(c).endswith("/pos-os/2")]
    assert rename[0] > sync_end and rename[0] > max(c[1] for c in store_names)


def target(call) -> str:
    """The path a call creates or writes: a write's file, an open's path, a link's or rename's new name."""
    if call[2] in ("write", "fsync", "syncfs"):
        return re.match(r"\d+<([^>]*)>", call[3]).group(1)
    paths = re.findall(r'"([^"]*)"', call[3])
    return paths[-1] if call[2] != "openat" else paths[0]


def test_without_syncfs_every_file_and_directory_is_fsynced_after_what_it_holds(tmp_path):
    calls = traced(tmp_path, """
        from pathlib import Path
        from posswarm.fsync import fsync_tree
        for name in ("chunks/ab/abcd", "chunks/ab/abef", "chunks/cd/cdef", "manifest.msgpack"):
            Path("rel", name).parent.mkdir(parents=True, exist_ok=True)
            Path("rel", name).write_bytes(name.encode())
        fsync_tree(Path("rel"))
    """)
    synced = [re.search(r"<(.*)>", c[3]).group(1) for c in calls if c[2] == "fsync"]
    top = str(tmp_path / "rel")
    names = [p.removeprefix(top) for p in synced if p.startswith(top)]
    assert sorted(names) == sorted(["/chunks/ab/abcd", "/chunks/ab/abef", "/chunks/ab", "/chunks/cd/cdef", "/chunks/cd",
                                    "/chunks", "/manifest.msgpack", ""])
    for parent in ("/chunks/ab", "/chunks/cd", "/chunks", ""):  # a directory after every name in it
        assert all(names.index(parent) > names.index(n) for n in names if n.startswith(parent + "/"))
