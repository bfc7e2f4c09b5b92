"""``posswarm-tracker`` as a process: comes up on port 0, is read by posswarm-stats, stops on Ctrl-C."""

import json
import re
import signal
import socket
import struct
import subprocess
import sys
from pathlib import Path

import trio

from tools.lab import write_operator_token
from tracker.cli import main

BIN = Path(sys.executable).parent


async def wait_for_listening(stream) -> tuple[str, str]:
    buffered = b""
    async for chunk in stream:
        buffered += chunk
        found = re.search(rb"event='listening'.*url='(http://[^']+)'.*udp='udp://([^']+)'", buffered)
        if found:
            return found.group(1).decode(), found.group(2).decode()
    raise AssertionError(f"tracker exited before listening: {buffered.decode(errors='replace')}")


async def test_serve_comes_up_on_http_and_udp_is_read_by_posswarm_stats_and_exits_cleanly_on_ctrl_c(tmp_path):
    token = write_operator_token(tmp_path / "operator.token")
    process = await trio.lowlevel.open_process(
        [str(BIN / "posswarm-tracker"), "serve", "--listen", "127.0.0.1:0", "--interval", "5", "--open",
         "--plain-http", "--udp", "127.0.0.1:0", "--operator-token-file", str(token)],
        stderr=subprocess.PIPE,
    )
    try:
        with trio.fail_after(30):
            url, udp = await wait_for_listening(process.stderr)
            host, port = udp.rsplit(":", 1)
            with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:  # a BEP 15 connect
                await client.sendto(struct.pack(">QII", 0x41727101980, 0, 77), (host, int(port)))
                assert struct.unpack(">II", (await client.recv(16))[:8]) == (0, 77)
            stats = await trio.run_process([str(BIN / "posswarm-stats"), "--tracker", url, "--json",
                                            "--token-file", str(token)], capture_stdout=True)
            assert json.loads(stats.stdout) == {"releases": {}, "stores": {}}
            process.send_signal(signal.SIGINT)
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def test_bad_flags_and_config_are_one_line_and_exit_2(tmp_path, capsys):
    bad = tmp_path / "tracker.toml"
    bad.write_text("policy = 'nearest'\n")
    for argv in (["serve", "--listen", "nowhere"], ["serve", "--bogus"], ["serve", "--config", str(bad)], []):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("posswarm-tracker: ") and err.count("\n") == 1, err


def test_a_plain_http_announce_port_must_be_asked_for(tmp_path, capsys):
    (tmp_path / "tls.crt").write_text("x")
    tls = ["--tls-cert", str(tmp_path / "tls.crt"), "--tls-key", str(tmp_path / "tls.crt")]
    for argv, reason in ((["serve", "--open"], "announces are served over HTTPS; give --tls-cert and --tls-key"),
                         (["serve", "--open", "--plain-http", *tls], "plain_http and tls_cert/tls_key contradict"),
                         (["serve", "--open", "--node-ca", str(tmp_path / "tls.crt")], "give tls_cert and tls_key too")):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert reason in err and err.count("\n") == 1, err


async def test_busy_port_is_a_one_line_error_exit_1():
    # A subprocess, because main() configures process-wide logging to its stderr.
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with trio.fail_after(30):
            done = await trio.run_process(
                [str(BIN / "posswarm-tracker"), "serve", "--open", "--open-stats", "--plain-http", "--listen",
                 f"127.0.0.1:{busy.getsockname()[1]}"],
                capture_stderr=True, check=False)
    assert done.returncode == 1
    assert done.stderr.decode().startswith("posswarm-tracker: tracker: cannot listen on 127.0.0.1:")
    assert b"Address already in use" in done.stderr and b"Traceback" not in done.stderr


async def test_a_plain_serve_refuses_to_start_without_an_operator_credential(tmp_path):
    serve = [str(BIN / "posswarm-tracker"), "serve", "--open", "--plain-http", "--listen", "127.0.0.1:0"]
    with trio.fail_after(30):
        done = await trio.run_process(serve, capture_stderr=True, check=False)
    lines = done.stderr.decode().splitlines()
    assert done.returncode == 1 and len(lines) == 1, lines
    assert lines[0].startswith("posswarm-tracker: tracker: /stats, /metrics and the dashboard need an operator "
                               "credential: pass --operator-token-file FILE") and "--open-stats" in lines[0]
    (tmp_path / "short.token").write_text("guessable")
    for bad in ("short.token", "absent.token"):
        with trio.fail_after(30):
            done = await trio.run_process([*serve, "--operator-token-file", str(tmp_path / bad)], capture_stderr=True,
                                          check=False)
        lines = done.stderr.decode().splitlines()
        assert done.returncode == 1 and len(lines) == 1 and f"operator_token_file {tmp_path / bad}" in lines[0], lines
        assert "guessable" not in lines[0]
    both = tmp_path / "tracker.toml"
    both.write_text(f'open_stats = true\noperator_token_file = "{write_operator_token(tmp_path / "op.token")}"\n')
    assert main([*serve[1:], "--config", str(both)]) == 2


async def _log_until_listening(argv: list[str]) -> bytes:
    """What a tracker started with ``argv`` logs up to its ``listening`` line (then it is killed)."""
    process = await trio.lowlevel.open_process(argv, stderr=subprocess.PIPE)
    try:
        with trio.fail_after(30):
            seen = b""
            while b"event='listening'" not in seen:
                chunk = await process.stderr.receive_some(65536)
                assert chunk, seen
                seen += chunk
        return seen
    finally:
        process.kill()
        await process.wait()


async def test_open_stats_is_said_in_the_log():
    seen = await _log_until_listening(
        [str(BIN / "posswarm-tracker"), "serve", "--open", "--open-stats", "--plain-http", "--listen", "127.0.0.1:0"])
    assert b"event='stats.open'" in seen and b"--operator-token-file" in seen


async def test_a_damaged_root_of_trust_stops_the_tracker_in_one_line_and_none_is_said_at_start(tmp_path):
    from seeder.keys_cli import init_keys

    keys = init_keys(tmp_path / "keys", tmp_path / "releases")
    tls_cert, tls_key = keys.issue_tls(["127.0.0.1"])
    serve = [str(BIN / "posswarm-tracker"), "serve", "--open", "--open-stats", "--listen", "127.0.0.1:0",
             "--tls-cert", str(tls_cert), "--tls-key", str(tls_key), "--node-ca", str(keys.authority)]
    (tmp_path / "root.json").write_text("{not tuf")
    with trio.fail_after(30):
        done = await trio.run_process([*serve, "--root", str(tmp_path / "root.json"), "--catalog",
                                       "https://127.0.0.1:9/catalog"], capture_stderr=True, check=False)
    lines = done.stderr.decode().splitlines()
    assert done.returncode == 1 and len(lines) == 1, lines
    assert lines[0].startswith(f"posswarm-tracker: root of trust {tmp_path / 'root.json'}: not a valid self-signed "
                               "TUF root"), lines
    seen = await _log_until_listening(serve)
    assert b"event='revocation.unchecked'" in seen and b"--root" in seen
