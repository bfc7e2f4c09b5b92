"""`posswarm-seeder release ...` as an operator runs it, and a running seeder serving the rollout it writes."""

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio

from posswarm.catalog.model import Catalog
from posswarm.keys import generate_keypair, load_public_key
from posswarm.rollout import FETCH, NOT_FOR_YOU, ROLLOUT_NAME, Rollout, decide, verify_rollout
from seeder import cli as seeder_cli
from seeder.server import Seeder

SEEDER = str(Path(sys.executable).parent / "posswarm-seeder")

ROLLOUTS_TOML = """
rings = ["canary", "wave-1", "all"]

[ring_stores]
canary = ["uk-0001"]
wave-1 = ["uk-00*", "de-0001"]

[groups]
uk = ["uk-*"]
north = ["uk-0001", "uk-0002"]
"""


def run(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([SEEDER, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=60)


def assert_one_line_error(proc, *needles):
    assert proc.returncode == 1, proc
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("keys")
    generate_keypair(out)
    return out


def _publish_for_uk_tills(tmp_path, keys) -> Path:
    rel = tmp_path / "rel"
    rel.mkdir()
    (rel / "rollouts.toml").write_text(ROLLOUTS_TOML)
    img = tmp_path / "pos-os.img"
    img.write_bytes(bytes(range(256)) * 1024)
    proc = run("publish", img, "--name", "pos-os", "--version", "2026.11", "--key", keys / "central.key",
               "--out", rel, "--group", "uk", "--class", "till")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[1].startswith("rollout: ring canary, active (rollout 1)")
    return rel


@pytest.fixture
def releases(tmp_path, keys) -> Path:
    """RELEASES with rollouts.toml and pos-os 2026.11 published for group uk, tills, at the first ring."""
    return _publish_for_uk_tills(tmp_path, keys)


@pytest.fixture(scope="module")
def untouched(tmp_path_factory, keys) -> Path:
    """As ``releases``, shared by tests that only read or are refused."""
    return _publish_for_uk_tills(tmp_path_factory.mktemp("untouched"), keys)


def rollout_of(releases: Path, keys: Path, version: str = "2026.11") -> Rollout:
    data = (releases / "pos-os" / version / ROLLOUT_NAME).read_bytes()
    return verify_rollout(data, load_public_key(keys / "central.pub"), name="pos-os", version=version)


def release(action, *extra, releases, keys, version="2026.11"):
    key = ("--key-pub", keys / "central.pub") if action == "show" else ("--key", keys / "central.key")
    return run("release", action, "pos-os", version, "--releases", releases, *key, *extra)


def test_promote_canary_then_wave_1_then_all(releases, keys):
    r = rollout_of(releases, keys)
    assert (r.sequence, r.ring, r.state, r.stores, r.device_classes) == (1, "canary", "active", ("uk-*",), ("till",))
    assert decide(r, store="uk-0001", device_class="till", role="cache").action == FETCH
    assert decide(r, store="uk-0002", device_class="till", role="cache").action == NOT_FOR_YOU

    proc = release("promote", releases=releases, keys=keys)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("pos-os 2026.11: ring wave-1, active (rollout 2) -> ")
    r = rollout_of(releases, keys)
    assert (r.sequence, r.ring, r.reached) == (2, "wave-1", ("uk-0001", "uk-00*", "de-0001"))
    assert decide(r, store="uk-0002", device_class="till", role="cache").action == FETCH
    # de-0001 is in wave-1 but not in the release's group uk
    assert decide(r, store="de-0001", device_class="till", role="cache").action == NOT_FOR_YOU

    assert release("promote", "--to", "all", releases=releases, keys=keys).returncode == 0
    r = rollout_of(releases, keys)
    assert (r.sequence, r.ring) == (3, "all")
    assert decide(r, store="uk-9999", device_class="till", role="device").action != NOT_FOR_YOU

    assert_one_line_error(release("promote", releases=releases, keys=keys),
                          "release pos-os 2026.11: is already at the last ring all")
    show = release("show", releases=releases, keys=keys)
    assert show.returncode == 0, show.stderr
    assert show.stdout.splitlines()[:2] == ["pos-os 2026.11: ring all, active (rollout 3)",
                                           "  rings:   canary -> wave-1 -> [all]"]


def test_activate_sets_when_devices_switch_and_refuses_what_is_no_time(releases, keys):
    assert rollout_of(releases, keys).activate == "window"
    proc = release("activate", "--when", "at 2026-12-02T02:00Z", releases=releases, keys=keys)
    assert proc.returncode == 0, proc.stderr
    r = rollout_of(releases, keys)
    assert (r.activate, r.sequence, r.format) == ("at 2026-12-02T02:00Z", 2, 2)
    assert "  activate: at 2026-12-02T02:00Z" in release("show", releases=releases, keys=keys).stdout
    assert_one_line_error(release("activate", "--when", "tonight", releases=releases, keys=keys),
                          "activate 'tonight': use 'now', 'window' or 'at YYYY-MM-DDTHH:MMZ' (UTC)")
    assert rollout_of(releases, keys).sequence == 2, "a refused change writes nothing"
    proc = release("activate", "--when", "now", "--store", "uk-0042", releases=releases, keys=keys)
    assert proc.returncode == 0, proc.stderr
    r = rollout_of(releases, keys)
    assert (r.activate_in("uk-0042"), r.activate_in("uk-0043")) == ("now", "at 2026-12-02T02:00Z")
    assert "store uk-0042 now" in release("show", releases=releases, keys=keys).stdout


def test_pause_resume_revoke(releases, keys):
    proc = release("pause", releases=releases, keys=keys)
    assert proc.returncode == 0 and "ring canary, paused (rollout 2)" in proc.stdout, proc.stderr
    assert_one_line_error(release("pause", releases=releases, keys=keys), "is already paused at ring canary")
    assert release("resume", releases=releases, keys=keys).returncode == 0
    assert rollout_of(releases, keys).state == "active"
    assert_one_line_error(release("resume", releases=releases, keys=keys), "is not paused")
    assert release("revoke", releases=releases, keys=keys).returncode == 0
    r = rollout_of(releases, keys)
    assert (r.state, r.sequence) == ("revoked", 4)
    for action in ("promote", "resume"):
        assert_one_line_error(release(action, releases=releases, keys=keys), "is revoked", "publish a new version")
    assert rollout_of(releases, keys).sequence == 4  # a refused change writes nothing


@pytest.mark.parametrize("args, needles", [
    (["release", "promote", "pos-os", "2099.1"], ["release pos-os 2099.1: not published in"]),
    (["release", "promote", "../pos-os", "2026.11"], ["release name '../pos-os': not a safe directory name"]),
    (["release", "promote", "pos-os", "2026.11", "--to", "wave-9"], ["ring 'wave-9': not defined in", "canary, wave-1, all"]),
    (["release", "promote", "pos-os", "2026.11", "--to", "canary"], ["ring canary is not after its current ring canary"]),
])
def test_bad_release_commands_give_one_line_errors(untouched, keys, args, needles):
    proc = run(*args, "--releases", untouched, "--key", keys / "central.key")
    assert_one_line_error(proc, *needles)
    assert rollout_of(untouched, keys).sequence == 1


def test_a_rollout_signed_by_another_key_is_refused(untouched, keys, tmp_path):
    releases = untouched
    other = tmp_path / "other"
    generate_keypair(other)
    proc = run("release", "show", "pos-os", "2026.11", "--releases", releases, "--key-pub", other / "central.pub")
    assert_one_line_error(proc, "release pos-os 2026.11: rollout is signed by key")
    proc = run("release", "pause", "pos-os", "2026.11", "--releases", releases, "--key", other / "central.key")
    assert_one_line_error(proc, "rollout is signed by key")


def test_bad_publish_targets_and_config_give_one_line_errors(tmp_path, keys, capsys):
    img = tmp_path / "x.img"
    img.write_bytes(b"x" * 1000)
    base = ["publish", img, "--name", "pos-os", "--version", "1", "--key", keys / "central.key", "--out", tmp_path / "rel"]
    assert_one_line_error(run(*base, "--group", "uk"), "--group uk: no rollouts config", "rollouts.toml")

    def main(*args):  # the same entry point in-process: each subprocess costs ~1 s of imports
        rc = seeder_cli.main([str(a) for a in args])
        captured = capsys.readouterr()
        return subprocess.CompletedProcess(args, rc, captured.out, captured.err)

    cfg = tmp_path / "r.toml"
    cfg.write_text(ROLLOUTS_TOML)
    assert_one_line_error(main(*base, "--rollout-config", cfg, "--group", "south"), "group 'south': not defined in", "north, uk")
    assert_one_line_error(main(*base, "--rollout-config", cfg, "--ring", "wave-9"), "ring 'wave-9': not defined")
    cfg.write_text('rings = ["canary", "all"]\n')
    assert_one_line_error(main(*base, "--rollout-config", cfg), "ring 'canary' has no ring_stores.canary")
    cfg.write_text('rings = ["all"]\nwaves = 3\n')
    assert_one_line_error(main(*base, "--rollout-config", cfg), "unknown key 'waves'")
    cfg.write_text("rings = [\n")
    assert_one_line_error(main(*base, "--rollout-config", cfg), f"rollouts config {cfg}: not valid TOML")
    assert not (tmp_path / "rel" / "pos-os").exists()


def test_a_release_without_a_rollout_behaves_as_before_and_can_still_be_paused(tmp_path, keys):
    img = tmp_path / "x.img"
    img.write_bytes(b"x" * 1000)
    rel = tmp_path / "rel"
    proc = run("publish", img, "--name", "pos-os", "--version", "1", "--key", keys / "central.key", "--out", rel,
               "--ring", "pilot")
    assert proc.returncode == 0 and len(proc.stdout.splitlines()) == 1, proc.stderr
    assert not (rel / "pos-os" / "1" / ROLLOUT_NAME).exists()
    show = release("show", releases=rel, keys=keys, version="1")
    assert "ring all, active (rollout 0)" in show.stdout and "its manifest's targets apply" in show.stdout
    assert release("pause", releases=rel, keys=keys, version="1").returncode == 0
    r = rollout_of(rel, keys, version="1")
    assert (r.sequence, r.ring, r.state, r.reached) == (1, "all", "paused", ("*",))


# --- a running seeder --------------------------------------------------------------------------

async def _catalog(client, url) -> Catalog:
    response = await client.get(f"{url}/catalog")
    return Catalog.from_json(response.json(), source=url)


async def test_a_running_seeder_serves_each_promotion_and_never_an_unverified_rollout(releases, keys, tmp_path):
    public = load_public_key(keys / "central.pub")
    seeder = Seeder(releases, keys / "central.pub", http=("127.0.0.1", 0), bt=("127.0.0.1", 0), data_dir=tmp_path / "data")
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as client:
        await nursery.start(seeder.run)
        (entry,) = (await _catalog(client, seeder.url)).releases
        assert entry.rollout_sequence == 1

        proc = await trio.run_process([SEEDER, "release", "promote", "pos-os", "2026.11", "--releases", str(releases),
                                       "--key", str(keys / "central.key")], capture_stdout=True, capture_stderr=True)
        assert proc.returncode == 0, proc.stderr
        with trio.fail_after(10):  # the seeder rescans every 0.5 s
            while (await _catalog(client, seeder.url)).releases[0].rollout_sequence != 2:
                await trio.sleep(0.05)
        served = await client.get(f"{seeder.url}/releases/pos-os/2026.11/{ROLLOUT_NAME}")
        r = verify_rollout(served.content, public, name="pos-os", version="2026.11")
        assert (r.sequence, r.ring) == (2, "wave-1")

        # A tampered file on disk is never served: the seeder keeps the last document that verified.
        path = releases / "pos-os" / "2026.11" / ROLLOUT_NAME
        good = path.read_bytes()
        path.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
        await seeder.scan()
        assert (await client.get(f"{seeder.url}/releases/pos-os/2026.11/{ROLLOUT_NAME}")).content == good

        # A new release whose rollout does not verify is not listed until it does (unlisted beats ring "all").
        staging = tmp_path / "staging"
        proc = run("publish", releases.parent / "pos-os.img", "--name", "pos-os", "--version", "2026.12",
                   "--key", keys / "central.key", "--out", staging, "--rollout-config", releases / "rollouts.toml")
        assert proc.returncode == 0, proc.stderr
        new_good = (staging / "pos-os" / "2026.12" / ROLLOUT_NAME).read_bytes()
        (staging / "pos-os" / "2026.12" / ROLLOUT_NAME).write_bytes(b"garbage")
        new = releases / "pos-os" / "2026.12"
        (staging / "pos-os" / "2026.12").rename(new)
        await seeder.scan()
        assert [e.version for e in (await _catalog(client, seeder.url)).releases] == ["2026.11"]
        (new / ROLLOUT_NAME).write_bytes(new_good)
        await seeder.scan()
        versions = {e.version: e.rollout_sequence for e in (await _catalog(client, seeder.url)).releases}
        assert versions == {"2026.11": 2, "2026.12": 1}
        nursery.cancel_scope.cancel()
