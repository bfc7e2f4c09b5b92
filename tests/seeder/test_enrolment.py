"""`posswarm-seeder enroll` and `enroll-token` as an operator runs them: a credential a node starts with,
and one-time tokens only central can issue and a node can use once."""

from __future__ import annotations

import datetime
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tuf.api.metadata import Metadata, Root

from posswarm.errors import PosswarmError
from posswarm.guess_limit import BURST, GuessLimit
from posswarm.identity import enrolment_request
from posswarm.identity.credential import check_matches, load_credential
from posswarm.trust.roles import role_public_keys
from posswarm.wallclock import now_ms
from seeder.enrolment_tokens import TOKENS_FILE, TokenBook, digest
from tests.seeder.test_cli import assert_one_line_error
from tests.seeder.test_keys_cli import ok, run
from tools.lab import Lab


def enrolment_keys(keys: Path):
    return tuple(role_public_keys(Metadata[Root].from_bytes((keys / "root.json").read_bytes()).signed, "enrolment"))


@pytest.fixture
def keys(tmp_path):
    ok("keys", "init", "--keys", tmp_path / "keys", "--releases", tmp_path / "releases")
    return tmp_path / "keys"


def test_enroll_writes_a_credential_the_node_accepts(keys, tmp_path):
    out = ok("enroll", "till-07", "--store", "S042", "--role", "device", "--class", "pos", "--keys", keys,
             "--out", tmp_path / "till-07")
    assert out.count("\n") == 1 and "enrolled device till-07 of store S042" in out
    assert (tmp_path / "till-07" / "node.key").stat().st_mode & 0o077 == 0
    credential = load_credential(tmp_path / "till-07", enrolment_keys(keys), now=datetime.datetime.now(datetime.UTC))
    check_matches(credential.identity, node_id="till-07", store="S042", role="device")
    assert credential.identity.device_class == "pos"


def test_enroll_refuses_bad_names_and_missing_keys_with_one_line(keys, tmp_path):
    proc = run("enroll", "till:07", "--store", "S042", "--role", "device", "--class", "pos", "--keys", keys,
               "--out", tmp_path / "x")
    assert_one_line_error(proc, 1, "node id 'till:07'")
    proc = run("enroll", "till-07", "--store", "S042", "--role", "device", "--class", "pos", "--keys",
               tmp_path / "nowhere", "--out", tmp_path / "x")
    assert_one_line_error(proc, 1, "enrolment")
    assert not (tmp_path / "x").exists()


# ---- one-time tokens, against a running seeder (real processes) ---------------------------------------------

POSSWARM = str(Path(sys.executable).parent / "posswarm")


def enroll(lab: Lab, token: str, node_id: str, out: Path, *more: str) -> subprocess.CompletedProcess:
    return subprocess.run([POSSWARM, "enroll", "--central", lab.seeder_url, "--token", token, "--node-id", node_id,
                           "--out", str(out), "--root", str(lab.root_of_trust), "--central-ca",
                           str(lab.central_keys.authority), *more],
                          capture_output=True, text=True, timeout=60)


def token(lab: Lab, *args: str) -> str:
    out = ok("enroll-token", "--data-dir", lab.root / "central" / "central-data", *args)
    assert out.count("\n") == 1
    return out.strip()


async def test_a_till_enrols_itself_once_with_a_token_bound_to_its_store_and_role(nursery, tmp_path):
    lab = Lab(tmp_path, devices=1)
    await lab.start_central(nursery)
    good = token(lab, "--store", lab.store, "--role", "device", "--class", "kiosk")
    assert len(good) >= 5 + 22  # >= 128 random bits after the prefix
    with sqlite3.connect(lab.root / "central" / "central-data" / TOKENS_FILE) as db:
        rows = db.execute("SELECT * FROM token").fetchall()
    assert len(rows) == 1 and rows[0][0] == digest(good) and good not in repr(rows)  # only its hash is kept

    done = await trio.to_thread.run_sync(enroll, lab, good, "till-09", tmp_path / "till-09")
    assert done.returncode == 0, done.stderr
    assert f"enrolled device till-09 of store {lab.store} (class kiosk" in done.stdout
    credential = load_credential(tmp_path / "till-09", enrolment_keys(lab.keys), now=datetime.datetime.now(datetime.UTC))
    check_matches(credential.identity, node_id="till-09", store=lab.store, role="device")

    again = await trio.to_thread.run_sync(enroll, lab, good, "till-10", tmp_path / "till-10")
    assert_one_line_error(again, 1, "refused", "already used", "by node till-09")
    assert not (tmp_path / "till-10").exists()

    expired_book = TokenBook(lab.root / "central" / "central-data")
    expired, _ = expired_book.issue(store=lab.store, role="device", ttl_s=1, now=now_ms() - 60_000)
    expired_book.close()
    late = await trio.to_thread.run_sync(enroll, lab, expired, "till-11", tmp_path / "till-11")
    assert_one_line_error(late, 1, "refused", "expired at")

    cache_token = token(lab, "--store", lab.store, "--role", "cache")
    wrong = await trio.to_thread.run_sync(enroll, lab, cache_token, "till-12", tmp_path / "till-12", "--role", "device")
    assert_one_line_error(wrong, 1, "refused", "it is for role 'cache', this node asks for 'device'")
    other_store = await trio.to_thread.run_sync(enroll, lab, cache_token, "cache-x", tmp_path / "cache-x",
                                                "--store", "S-elsewhere")
    assert_one_line_error(other_store, 1, f"it is for store '{lab.store}'")
    # Refused requests did not use the token up: the cache it was issued for still enrols with it.
    cache = await trio.to_thread.run_sync(enroll, lab, cache_token, "cache-1", tmp_path / "cache-1", "--role", "cache")
    assert cache.returncode == 0 and "enrolled cache cache-1" in cache.stdout, cache.stderr


async def test_guessing_tokens_is_rate_limited(nursery, tmp_path):
    lab = Lab(tmp_path, devices=1)
    await lab.start_central(nursery)
    body = enrolment_request.build(Ed25519PrivateKey.generate(), token="pse1_" + "A" * 32, node_id="till-1")
    # A refusal too, answered from the declared length before the body is read (so sent by hand: a client
    # still writing the rest would see the connection close under it).
    host, port = lab.seeder_url.removeprefix("https://").rsplit(":", 1)
    stream = await trio.open_ssl_over_tcp_stream(host, int(port), ssl_context=lab.central_tls)
    await stream.send_all(f"POST /enroll HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                          f"Content-Length: {64 << 10}\r\n\r\n{{".encode())
    answer = b""
    with trio.fail_after(10):
        while b"\r\n\r\n" not in answer or b"over 16384" not in answer:
            chunk = await stream.receive_some(65536)
            if not chunk:
                break
            answer += chunk
    await stream.aclose()
    assert answer.startswith(b"HTTP/1.1 413") and b"over 16384" in answer, answer[:300]
    async with httpx.AsyncClient(base_url=lab.seeder_url, verify=lab.central_tls) as client:
        answers = [await client.post("/enroll", content=body) for _ in range(BURST)]
        assert [a.status_code for a in answers[:-1]] == [403] * (BURST - 1)
        assert "not one this central issued" in answers[0].json()["error"]
        assert answers[-1].status_code == 429 and "too many refused attempts" in answers[-1].json()["error"]


def test_the_guess_limit_refills_and_stays_bounded():
    limit = GuessLimit(burst=2, every_s=10.0, max_addresses=3)
    for _ in range(2):
        assert limit.wait_s("10.0.0.1", 0.0) == 0.0
        limit.refused("10.0.0.1", 0.0)
    assert limit.wait_s("10.0.0.1", 0.0) == pytest.approx(10.0)
    assert limit.wait_s("10.0.0.1", 10.0) == 0.0  # one attempt back after one interval
    assert limit.wait_s("10.0.0.2", 0.0) == 0.0  # another address is not held up
    for n in range(10):
        limit.refused(f"10.0.1.{n}", 0.0)
    assert len(limit._buckets) == 3


def test_a_token_is_used_once_even_by_two_seeders_at_the_same_moment(tmp_path):
    import threading

    token, _ = TokenBook(tmp_path).issue(store="S042", role="device")
    books = [TokenBook(tmp_path) for _ in range(8)]  # eight connections, as eight seeders on one data dir
    start, outcomes = threading.Barrier(len(books)), []

    def use(book: TokenBook, n: int) -> None:
        start.wait()
        try:
            with book.consuming(token, node_id=f"till-{n}", now=now_ms()) as grant:
                outcomes.append(grant.store)
        except PosswarmError as exc:
            outcomes.append(str(exc))

    threads = [threading.Thread(target=use, args=(book, n)) for n, book in enumerate(books)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert outcomes.count("S042") == 1, outcomes
    assert all("already used" in o or "write failed" in o for o in outcomes if o != "S042"), outcomes
