"""`posswarm-seeder` keygen/publish as a user runs them, and `posswarm verify`'s entry point."""

import random
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from posswarm.keys import key_id, load_private_key, load_public_key
from posswarm.verify_cmd import verify_main

SEEDER = str(Path(sys.executable).parent / "posswarm-seeder")


def run(*args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([SEEDER, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=60)


def assert_one_line_error(proc, rc, *needles):
    assert proc.returncode == rc, proc
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("keys") / "central"
    proc = run("keygen", "--out", out, cwd=out.parent)
    assert proc.returncode == 0, proc.stderr
    return out


def test_keygen_writes_a_usable_private_and_public_pair(keys):
    priv, pub = keys / "central.key", keys / "central.pub"
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    assert key_id(load_private_key(priv).public_key()) == key_id(load_public_key(pub))
    proc = run("keygen", "--out", keys, cwd=keys)
    assert_one_line_error(proc, 1, "posswarm-seeder: ", "central.key", "already exists")


def test_publish_then_verify(tmp_path, keys, capsys):
    img = tmp_path / "pos-os.img"
    img.write_bytes(random.Random(1).randbytes(3 * 1024 * 1024))
    proc = run(
        "publish", img, "--name", "pos-os", "--version", "2026.11", "--key", keys / "central.key",
        "--out", tmp_path / "rel", "--store", "s-0042", "--store", "s-0043", "--class", "till", "--ring", "pilot",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    summary = proc.stdout.strip().splitlines()
    assert len(summary) == 1 and summary[0].startswith("published pos-os 2026.11: 3.1 MB, ")
    assert "new)" in summary[0] and "MB/s" in summary[0]

    rel = tmp_path / "rel" / "pos-os" / "2026.11"
    assert verify_main(str(rel), str(keys / "central.pub")) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok: pos-os 2026.11 (") and "3145728 bytes" in out

    proc = run("publish", img, "--name", "pos-os", "--version", "2026.11", "--key", keys / "central.key",
               "--out", tmp_path / "rel", cwd=tmp_path)
    assert_one_line_error(proc, 1, "release pos-os 2026.11", "already exists")


def test_verify_main_reports_one_line_failure(tmp_path, keys, capsys):
    assert verify_main(str(tmp_path), str(keys / "central.pub")) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "manifest.msgpack" in err


@pytest.mark.parametrize(
    "args, rc, needles",
    [
        (["publish", "missing.img", "--name", "pos-os", "--version", "1", "--key", "KEY", "--out", "rel"], 1, ["missing.img"]),
        (["publish", "img", "--name", "../pos-os", "--version", "1", "--key", "KEY", "--out", "rel"], 1, ["not a safe directory name"]),
        (["publish", "img", "--name", "pos-os", "--version", "1", "--key", "img", "--out", "rel"], 1, ["private key img"]),
        (["publish", "img", "--name", "pos-os", "--version", "1", "--key", "KEY", "--out", "rel", "--piece-kib", "100"], 1, ["piece size"]),
        (["publish", "img", "--name", "pos-os"], 2, ["required"]),
        (["frobnicate"], 2, ["invalid choice"]),
    ],
)
def test_bad_input_gives_one_line_and_no_traceback(tmp_path, keys, args, rc, needles):
    (tmp_path / "img").write_bytes(b"x" * 1000)
    args = [str(keys / "central.key") if a == "KEY" else a for a in args]
    proc = run(*args, cwd=tmp_path)
    assert proc.returncode == rc
    assert "Traceback" not in proc.stderr
    assert all(n in proc.stderr for n in needles), proc.stderr
    if rc == 1:
        assert_one_line_error(proc, 1, "posswarm-seeder: ", *needles)
