"""Realistic POS images for benchmarks and tests: a deterministic ext4 image of this machine's own files, and its next version.

Random bytes stay the incompressible worst case; these are what a real OS image and a real update look
like to a chunker and a compressor. ``build_pair`` is the entry point: two images, the second a
package-upgrade-style (or one-package, or scattered-edit) change of the first. Everything streams
through files on disk (copy, edit in place, ``mkfs.ext4 -d``): no image is ever held in memory.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import shutil
import stat
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from posswarm.errors import PosswarmError

# Where the files come from, and each one's share of the image's files: what a POS image is made of
# (shared libraries, a language runtime, docs and translations).
SOURCES = (
    ("/usr/lib", 0.50),
    (sysconfig.get_paths()["stdlib"], 0.25),
    ("/usr/share/doc", 0.10),
    ("/usr/share/locale", 0.05),
    ("/usr/share", 0.10),
)
CHANGES = ("upgrade", "package", "scattered")
EPOCH = 1_700_000_000  # every timestamp in every image: the same tree gives the same bytes
FS_UUID = "5e1ec7ed-0000-4000-8000-00000000a11c"  # filesystem UUID and directory hash seed
BLOCK = 4096
FILE_SHARE = 0.72  # of the image, in file bytes (the 300 MiB of files in a 420 MiB image)
MAX_FILE = 32 * 1024 * 1024  # one huge file would make the image one file's story
# Only names debugfs's command line reads back verbatim (see _pin_times); anything else is skipped.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9._+,=@:-]{1,200}")


@dataclass(frozen=True)
class Change:
    """What ``next_tree`` did to the files (changed: edited in place or appended to; bytes: their sizes)."""

    kind: str
    files_changed: int
    files_removed: int
    files_added: int
    bytes_changed: int  # size of every edited or added file: the file content an update must carry


def gather(tree: Path, file_bytes: int, *, sources: tuple[tuple[str, float], ...] = SOURCES) -> int:
    """Copy real files from ``sources`` into ``tree``, taking about ``file_bytes`` of 4 KiB blocks; the bytes taken.

    Whole directories (packages, more or less) are taken, chosen by a hash of their path so the sample
    spreads over each source rather than taking its alphabetical first; paths keep their place
    (``/usr/lib/x`` becomes ``tree/usr/lib/x``). The same machine always gives the same tree.
    """
    tree.mkdir(parents=True, exist_ok=True)
    copied = 0
    for source, share in sources:
        budget = copied + int(file_bytes * share)
        for directory, files in sorted(_directories(source), key=lambda d: hashlib.blake2b(d[0].encode()).digest()):
            home = tree / directory.lstrip("/")
            if home.exists():
                continue
            # What they take in the image: their blocks, and a block for each directory made for them.
            made = sum(1 for d in (home, *home.parents) if d.is_relative_to(tree) and not d.exists())
            size = sum(-(-n // BLOCK) * BLOCK for _, n in files) + made * BLOCK
            if copied + size > budget:
                continue
            copied += made * BLOCK
            for path, n in files:
                dest = tree / path.lstrip("/")
                try:
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(path, dest)
                except OSError:
                    continue  # unreadable here (permissions, vanished): take the next file
                dest.chmod(0o644)
                copied += -(-n // BLOCK) * BLOCK
    if copied < file_bytes * 0.5:
        raise PosswarmError(f"image tree {tree}: found only {copied} bytes of files to copy for {file_bytes} "
                            "(ask for a smaller image)")
    return copied


def _directories(source: str):
    """(directory, [(file, size), ...]) for each directory under ``source`` with plain-named regular files."""
    for dirpath, dirnames, filenames in os.walk(source):
        dirnames[:] = sorted(d for d in dirnames if _PLAIN_NAME.fullmatch(d))
        files = []
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if _PLAIN_NAME.fullmatch(name) and stat.S_ISREG(st.st_mode) and st.st_size <= MAX_FILE:
                files.append((path, st.st_size))
        if files:
            yield dirpath, files


def files_of(tree: Path) -> list[str]:
    """Every regular file of ``tree``, as sorted relative paths."""
    return sorted(p.relative_to(tree).as_posix() for p in tree.rglob("*") if p.is_file())


def next_tree(old: Path, new: Path, kind: str = "upgrade", *, seed: int = 1) -> Change:
    """Make ``new`` the next version of tree ``old``: unchanged files hard-linked, changed files copied and edited.

    ``upgrade``: as package upgrades change files — 5 % of files get a few bytes edited (version
    strings, offsets), half of those also grow at the end; 1 % are removed and 0.5 % added.
    ``package``: one package (one directory of 1-8 MiB) is rebuilt: every file of it edited every ~8 KiB.
    ``scattered``: many small edits: 2 % of files get one few-byte edit each, in place.
    """
    if kind not in CHANGES:
        raise PosswarmError(f"image change {kind!r}: not one of {', '.join(CHANGES)}")
    rng = random.Random(f"{kind}-{seed}")
    files = files_of(old)
    for rel in files:
        dest = new / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.link(old / rel, dest)
    changed, removed, added = set(), [], []
    if kind == "upgrade":
        changed = set(rng.sample(files, max(1, len(files) // 20)))
        removed = rng.sample(sorted(set(files) - changed), max(1, len(files) // 100))
        added = rng.sample(sorted(set(files) - changed - set(removed)), max(1, len(files) // 200))
    elif kind == "package":
        changed = set(_one_package(files, old, rng))
    else:
        changed = set(rng.sample(files, max(1, len(files) // 50)))
    for rel in removed:
        (new / rel).unlink()
    for rel in sorted(changed):
        _edit(new / rel, kind, rng)
    for rel in added:  # a new file of the new version: like a sibling, not a copy of one
        target = new / f"{rel}.new"
        shutil.copyfile(old / rel, target)
        _edit(target, "upgrade", rng)
    touched = [new / rel for rel in changed] + [new / f"{rel}.new" for rel in added]
    return Change(kind, len(changed), len(removed), len(added), sum(p.stat().st_size for p in touched))


def _one_package(files: list[str], tree: Path, rng: random.Random) -> list[str]:
    by_dir: dict[str, list[str]] = {}
    for rel in files:
        by_dir.setdefault(rel.rpartition("/")[0], []).append(rel)
    sized = sorted((d, members) for d, members in by_dir.items()
                   if 1 << 20 <= sum((tree / m).stat().st_size for m in members) <= 8 << 20)
    if not sized:
        raise PosswarmError(f"image tree {tree}: no directory of 1-8 MiB to change as one package (use a bigger image)")
    return rng.choice(sized)[1]


def _edit(path: Path, kind: str, rng: random.Random) -> None:
    """Change ``path`` the way ``kind`` does, on a copy of its own (other versions share the old inode)."""
    tmp = path.with_name(path.name + ".edit")
    shutil.copyfile(path, tmp)
    os.replace(tmp, path)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        if kind == "package":
            offsets = range(rng.randrange(1, 8192), max(size, 1), 8192)
        elif kind == "scattered":
            offsets = [rng.randrange(max(size, 1))]
        else:
            offsets = [rng.randrange(max(size, 1)) for _ in range(rng.randint(1, 4))]
        for offset in offsets:
            f.seek(offset)
            f.write(rng.randbytes(rng.randint(1, 8)))
        if kind == "package" or (kind == "upgrade" and rng.random() < 0.5):
            f.seek(0, os.SEEK_END)
            f.write(rng.randbytes(16) + b"\0" * rng.randint(16, 4096))  # a new symbol, some padding


def build_image(tree: Path, image: Path, size: int) -> None:
    """Write the ext4 image ``image`` of ``size`` bytes holding ``tree``; the same tree always gives the same bytes.

    Fixed: file order (mkfs sorts each directory), UUID and hash seed, owner, every timestamp, and
    no lazy init. Needs e2fsprogs (``apt-get install e2fsprogs``).
    """
    if shutil.which("mkfs.ext4") is None or shutil.which("debugfs") is None:
        raise PosswarmError("mkfs.ext4/debugfs: not installed (apt-get install e2fsprogs)")
    entries = sum(1 for _ in tree.rglob("*"))
    image.unlink(missing_ok=True)
    with open(image, "wb") as f:
        f.truncate(size)
    env = {**os.environ, "E2FSPROGS_FAKE_TIME": str(EPOCH), "SOURCE_DATE_EPOCH": str(EPOCH)}
    _run(["mkfs.ext4", "-q", "-F", "-t", "ext4", "-b", str(BLOCK), "-m", "0", "-N", str(entries + entries // 4 + 64),
          "-U", FS_UUID, "-E", f"hash_seed={FS_UUID},root_owner=0:0,nodiscard,lazy_itable_init=0,lazy_journal_init=0",
          "-d", str(tree), str(image)], env, f"image {image}: mkfs.ext4 failed (is {size} bytes enough for the files?)")
    _pin_times(tree, image, env)


def _pin_times(tree: Path, image: Path, env: dict) -> None:
    # mkfs -d copies each file's ctime and atime from the tree, which no one can set: debugfs fixes them.
    script = image.with_name(image.name + ".times")
    with open(script, "w") as f:
        for path in sorted(tree.rglob("*")):
            rel = "/" + path.relative_to(tree).as_posix()
            for field in ("atime", "mtime", "ctime"):
                f.write(f'sif "{rel}" {field} {EPOCH}\n')
    try:
        _run(["debugfs", "-w", "-f", str(script), str(image)], env, f"image {image}: debugfs could not pin times")
    finally:
        script.unlink(missing_ok=True)


def _run(argv: list[str], env: dict, failure: str) -> None:
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    errors = [line for line in done.stderr.splitlines() if line and not line.startswith("debugfs ")]
    if done.returncode != 0 or (argv[0] == "debugfs" and errors):
        raise PosswarmError(f"{failure}: {(errors or [done.stdout.strip()])[-1][:200]}")


def build_pair(workdir: Path, size: int, kind: str = "upgrade", *, seed: int = 1) -> tuple[Path, Path, Change]:
    """(v1.img, v2.img, the change): a realistic image of ``size`` bytes and its next version, under ``workdir``.

    Both images are ``size`` bytes; their files fill about FILE_SHARE of it.
    """
    workdir = Path(workdir)
    for name in ("tree-v1", "tree-v2"):
        shutil.rmtree(workdir / name, ignore_errors=True)
    gather(workdir / "tree-v1", int(size * FILE_SHARE))
    change = next_tree(workdir / "tree-v1", workdir / "tree-v2", kind, seed=seed)
    v1, v2 = workdir / "v1.img", workdir / "v2.img"
    build_image(workdir / "tree-v1", v1, size)
    build_image(workdir / "tree-v2", v2, size)
    return v1, v2, change


def main(argv: list[str] | None = None) -> int:
    """``python -m tools.images WORKDIR SIZE_MIB [KIND]``: build a pair and say what changed."""
    args = sys.argv[1:] if argv is None else argv
    v1, v2, change = build_pair(Path(args[0]), int(args[1]) << 20, args[2] if len(args) > 2 else "upgrade")
    print(f"{v1} {v2} {change}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
