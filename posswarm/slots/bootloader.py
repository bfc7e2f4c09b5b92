"""Read and write the bootloader environment: GRUB's grub-editenv, U-Boot's fw_printenv/fw_setenv, or the
operator's own commands; each a blocking call (run it from a thread), each failure one line."""

from __future__ import annotations

import os
import shlex
import shutil
import tempfile
from pathlib import Path

from posswarm import health
from posswarm.errors import PosswarmError
from posswarm.fsync import fsync_dir, fsync_file

BOOTLOADERS = ("grub", "uboot", "command")
#: Reading or writing a bootloader environment is instant; this bounds a hung tool or flash.
TOOL_TIMEOUT_S = 30.0
PREFIX = "posswarm_"


class Bootloader:
    """One bootloader environment: ``read()`` its posswarm_* variables, ``write(updates)`` some of them."""

    def __init__(self, kind: str, *, env_file: str = "", get_command: str = "", set_command: str = "") -> None:
        if kind not in BOOTLOADERS:
            raise PosswarmError(f"install.bootloader {kind!r}: use one of {', '.join(BOOTLOADERS)}")
        self.kind = kind
        self.env_file = env_file  # grub: the grubenv file; uboot: the fw_env.config naming the environment
        self.get_command = get_command
        self.set_command = set_command

    @property
    def what(self) -> str:
        return {"grub": f"grub environment {self.env_file}", "uboot": f"U-Boot environment of {self.env_file}",
                "command": "bootloader environment (install.env_get_command)"}[self.kind]

    def read(self) -> dict[str, str]:
        if self.kind == "grub":
            if not Path(self.env_file).exists():
                self._run(["grub-editenv", self.env_file, "create"], "create")
            out = self._run(["grub-editenv", self.env_file, "list"], "list")
        elif self.kind == "uboot":
            out = self._run(["fw_printenv", "-c", self.env_file], "read")
        else:
            out = self._run(shlex.split(self.get_command), "read")
        found = {}
        for line in out.splitlines():
            key, sep, value = line.partition("=")
            if sep and key.startswith(PREFIX):
                found[key] = value
        return found

    def write(self, updates: dict[str, str]) -> None:
        """Set every variable of ``updates`` in one call of the tool (an empty value clears it)."""
        for key, value in updates.items():
            if not key.startswith(PREFIX) or "\n" in value or "=" in key:
                raise ValueError(f"bootloader variable {key!r}={value!r}")
        pairs = [f"{k}={v}" for k, v in sorted(updates.items())]
        if self.kind == "grub":
            self._write_grub(pairs)
        elif self.kind == "uboot":
            # -s: every change in one write of the environment (and its redundant copy), not one per variable
            with tempfile.NamedTemporaryFile("w", prefix="posswarm-env-", suffix=".txt") as script:
                script.write("".join(f"{pair}\n" for pair in pairs))  # libubootenv's form: KEY=VALUE
                script.flush()
                self._run(["fw_setenv", "-c", self.env_file, "-s", script.name], "write")
        else:
            self._run([*shlex.split(self.set_command), *pairs], "write")

    def _write_grub(self, pairs: list[str]) -> None:
        """grub-editenv rewrites its file in place: a power cut in the middle leaves a block GRUB refuses. So it
        edits a copy, and the copy replaces the file by rename (old or new environment, never half of one)."""
        env = Path(self.env_file)
        copy = env.with_name(f".{env.name}.posswarm-new")
        copy.unlink(missing_ok=True)
        if env.exists():
            shutil.copyfile(env, copy)
        else:
            self._run(["grub-editenv", str(copy), "create"], "create")
        self._run(["grub-editenv", str(copy), "set", *pairs], "write")
        fsync_file(copy)
        os.replace(copy, env)
        fsync_dir(env.parent)

    def _run(self, argv: list[str], doing: str) -> str:
        done = health.run(shlex.join(argv), env={"PATH": health.SAFE_PATH, "LANG": "C.UTF-8"}, cwd=Path("/"),
                          timeout_s=TOOL_TIMEOUT_S)
        problem = health.explain(done, what=f"{self.what}: {doing} with", command=argv[0], timeout_s=TOOL_TIMEOUT_S)
        if problem:
            raise PosswarmError(f"{problem} (is {argv[0]} installed and install.bootloader_env right?)")
        return done.output.decode(errors="replace")
