"""Central's signed, fresh state against a hostile store network: fake caches (real HTTP servers in the test),
replays, a leaked release key, a cut connection and an offline store, with real seeder and node processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from dataclasses import replace
from datetime import datetime, timezone

import httpx
import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from tuf.api.metadata import Metadata, Targets

from posswarm import http_service
from posswarm.keys import load_private_key
from posswarm.rollout import Rollout, sign_rollout
from posswarm.signed_doc import MAX_COUNT
from posswarm.trust.roles import signer
from tools.lab import Lab, LabNode, bin_path, write_image

NAME = "pos-image"


class FakeCache:
    """A real HTTP server where a store cache would be: relays ``upstream`` except what the test swaps in.

    ``swap`` maps a path to bytes (served instead), or None (404); ``cut`` maps a path to how many more
    requests of it end mid-body (a connection cut, as a timeout leaves it); ``strip`` drops the rollout
    sequences from ``/catalog``, as a cache that wants a paused release to look "active, ring all" would."""

    def __init__(self, upstream: str, verify) -> None:
        self.upstream, self.verify = upstream, verify
        self.swap: dict[str, bytes | None] = {}
        self.cut: dict[str, int] = {}
        self.strip = False
        self.url = ""

    async def run(self, host: str, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with httpx.AsyncClient(timeout=10, verify=self.verify) as client:
            async def any_path(request: Request) -> Response:
                path = request.url.path
                if path in self.swap:
                    data = self.swap[path]
                    return Response(status_code=404) if data is None else Response(data)
                upstream = await client.get(f"{self.upstream}{path}")
                if upstream.status_code != 200:
                    return Response(status_code=upstream.status_code)
                if self.cut.get(path, 0) > 0:
                    self.cut[path] -= 1
                    return _cut_response(upstream.content)
                if path == "/catalog" and self.strip:
                    doc = upstream.json()
                    for entry in doc["releases"]:
                        entry.pop("rollout_sequence", None)
                    return JSONResponse(doc)
                return Response(upstream.content)

            app = Starlette(routes=[Route("/{path:path}", any_path)])
            async with trio.open_nursery() as nursery:
                self.url = await nursery.start(http_service.run, app, host, 0)
                task_status.started(self)


def _cut_response(data: bytes) -> Response:
    async def half():
        yield data[: len(data) // 2]
        raise ConnectionResetError("fake cache cut the connection")  # hypercorn drops it mid-body

    return StreamingResponse(half(), headers={"content-length": str(len(data))})


async def _world(lab: Lab) -> dict[str, bytes]:
    """Every ``/tuf/`` file central serves now (each root version, timestamp, snapshot, targets): a copy to replay."""
    files, url = {}, lab.seeder_url
    async with httpx.AsyncClient(verify=lab.central_tls) as client:
        for name in ("timestamp.json", "snapshot.json", "targets.json"):
            files[f"/tuf/{name}"] = (await client.get(f"{url}/tuf/{name}")).content
        version = 1
        while (r := await client.get(f"{url}/tuf/{version}.root.json")).status_code == 200:
            files[f"/tuf/{version}.root.json"] = r.content
            version += 1
    return files


async def _wait_targets_list(lab: Lab, path: str, *, sequence: int | None = None) -> None:
    """Until central's signed targets (behind a timestamp that names them) list ``path``."""
    url = lab.seeder_url
    async with httpx.AsyncClient(verify=lab.central_tls) as client:
        while True:
            ts = (await client.get(f"{url}/tuf/timestamp.json")).json()["signed"]["meta"]["snapshot.json"]["version"]
            snap = (await client.get(f"{url}/tuf/snapshot.json")).json()["signed"]
            targets = (await client.get(f"{url}/tuf/targets.json")).json()["signed"]
            listed = targets["targets"].get(path)
            if ts == snap["version"] and snap["meta"]["targets.json"]["version"] == targets["version"] and listed and (
                    sequence is None or listed["custom"].get("sequence") == sequence):
                return
            await trio.sleep(0.2)  # the seeder re-signs its timestamp within 0.5 s of a new snapshot


def _trust(lab: Lab, node: LabNode) -> dict:
    return (lab.status_of(node) or {}).get("central_state", {})


async def _refreshes(lab: Lab, node: LabNode, count: int = 2) -> dict:
    """Wait for ``count`` more refreshes of central's state on ``node``; its status after them."""
    seen = (_trust(lab, node).get("last_refresh") or {}).get("at", 0)
    done = 0
    while done < count:
        at = (_trust(lab, node).get("last_refresh") or {}).get("at", 0)
        if at > seen:
            seen, done = at, done + 1
        await trio.sleep(0.1)  # status.json is rewritten every 0.5 s
    return lab.status_of(node)


def _seeder(lab: Lab, *args: str) -> str:
    done = subprocess.run([bin_path("posswarm-seeder"), *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _release(lab: Lab, action: str, version: str) -> None:
    _seeder(lab, "release", action, NAME, version, "--releases", str(lab.releases), "--key", str(lab.private_key))


async def _central_with_release(nursery, lab: Lab, tmp_path, *, canary: bool = False, size_mb: int = 1) -> None:
    """Central up with release 1.0 published (at a canary ring elsewhere with ``canary``) and signed into targets."""
    if canary:
        (lab.releases / "rollouts.toml").write_text('rings = ["canary", "all"]\n[ring_stores]\ncanary = ["S-canary-*"]\n')
    await lab.start_central(nursery)
    await lab.publish(write_image(tmp_path / "a.img", size_mb, seed=1), "1.0", name=NAME)
    await _wait_targets_list(lab, f"{NAME}/1.0/manifest.msgpack")


def _device_via(fake: FakeCache, **more) -> dict:
    return {"store": {"cache_url": fake.url}, **more}


async def _start_fake(nursery, lab: Lab, upstream: str, last_octet: int) -> FakeCache:
    return await nursery.start(FakeCache(upstream, lab.central_tls).run, f"127.{lab.net}.1.{last_octet}")


async def test_a_fake_cache_cannot_give_a_fresh_till_an_old_release_or_a_stripped_state(tmp_path):
    lab = Lab(tmp_path, devices=2, timestamp_expiry_s=3)
    old_world_till, stripped_till = lab.devices
    async with trio.open_nursery() as nursery:
        with trio.fail_after(90):
            await _central_with_release(nursery, lab, tmp_path, size_mb=2)
            old_world = await _world(lab)  # 1.0 active, ring all: the world a mirror could replay
            _release(lab, "revoke", "1.0")
            await _wait_targets_list(lab, f"{NAME}/1.0/rollout.msgpack", sequence=1)
            while json.loads(old_world["/tuf/timestamp.json"])["signed"]["expires"] >= _utc_now():
                await trio.sleep(0.2)  # the copied timestamp lapses 3 s after it was signed

            replay = await _start_fake(nursery, lab, lab.seeder_url, 1)
            replay.swap.update(old_world)
            replay.strip = True
            stripped = await _start_fake(nursery, lab, lab.seeder_url, 2)
            stripped.strip = True  # live signed state, but the catalog and the rollout document stripped
            stripped.swap[f"/releases/{NAME}/1.0/rollout.msgpack"] = None
            await lab.start_node(nursery, old_world_till, extra=_device_via(replay))
            await lab.start_node(nursery, stripped_till, extra=_device_via(stripped))

            doc = await _refreshes(lab, old_world_till)
            last = doc["central_state"]["last_refresh"]
            assert last["refused"] and "expired" in last["problem"] and "\n" not in last["problem"], last
            assert doc["releases"] == [] and doc["installed"] == {}
            doc = await _refreshes(lab, stripped_till, 3)
            assert doc["central_state"]["fresh"] and doc["releases"] == [] and doc["installed"] == {}

            # Nothing lost: once the revocation can be had, the till holds it (and still installs nothing).
            del stripped.swap[f"/releases/{NAME}/1.0/rollout.msgpack"]
            held = stripped_till.data_dir / "rollouts" / f"{NAME}@1.0.msgpack"
            while not held.exists():
                await trio.sleep(0.1)
            assert Rollout.from_bytes(held.read_bytes()).state == "revoked"
            assert lab.status_of(stripped_till)["releases"] == []
        nursery.cancel_scope.cancel()


async def test_a_replayed_older_snapshot_and_timestamp_are_refused(tmp_path):
    lab = Lab(tmp_path, devices=1)
    till = lab.devices[0]
    async with trio.open_nursery() as nursery:
        with trio.fail_after(90):
            await _central_with_release(nursery, lab, tmp_path, canary=True)
            old_world = await _world(lab)  # still valid: within its day
            _release(lab, "pause", "1.0")
            await _wait_targets_list(lab, f"{NAME}/1.0/rollout.msgpack", sequence=2)
            fake = await _start_fake(nursery, lab, lab.seeder_url, 1)
            await lab.start_node(nursery, till, extra=_device_via(fake))
            doc = await _refreshes(lab, till)
            newest = doc["central_state"]["versions"]
            assert doc["central_state"]["fresh"] and not doc["central_state"]["last_refresh"]["problem"]

            fake.swap.update(old_world)  # last week's signed world, not expired yet
            doc = await _refreshes(lab, till)
            last = doc["central_state"]["last_refresh"]
            assert last["refused"] and "replayed" in last["problem"], last
            assert doc["central_state"]["versions"] == newest  # kept the newer state
            held = till.data_dir / "rollouts" / f"{NAME}@1.0.msgpack"
            assert Rollout.from_bytes(held.read_bytes()).state == "paused"
        nursery.cancel_scope.cancel()


async def test_a_leaked_release_key_is_refused_after_rotation(tmp_path):
    lab = Lab(tmp_path, devices=1)
    till = lab.devices[0]
    async with trio.open_nursery() as nursery:
        with trio.fail_after(90):
            await _central_with_release(nursery, lab, tmp_path)
            leaked = load_private_key(lab.private_key)
            out = _seeder(lab, "keys", "rotate", "targets", "--keys", str(lab.keys), "--releases", str(lab.releases))
            assert "root of trust version 2" in out
            async with httpx.AsyncClient(verify=lab.central_tls) as client:
                while (await client.get(f"{lab.seeder_url}/tuf/2.root.json")).status_code != 200:
                    await trio.sleep(0.2)
            await _wait_targets_list(lab, f"{NAME}/1.0/manifest.msgpack")

            # The thief re-signs central's targets with the leaked key, listing a release of their own.
            async with httpx.AsyncClient(verify=lab.central_tls) as client:
                forged = Metadata[Targets].from_bytes((await client.get(f"{lab.seeder_url}/tuf/targets.json")).content)
            listed = forged.signed.targets[f"{NAME}/1.0/manifest.msgpack"]
            listed.unrecognized_fields["custom"]["targets"]["stores"] = ["*"]
            forged.signed.targets["evil/6.6.6/manifest.msgpack"] = type(listed).from_dict(
                dict(listed.to_dict()), "evil/6.6.6/manifest.msgpack")
            forged.signatures.clear()
            forged.sign(signer(leaked))
            fake = await _start_fake(nursery, lab, lab.seeder_url, 1)
            fake.swap["/tuf/targets.json"] = forged.to_bytes()
            await lab.start_node(nursery, till, extra=_device_via(fake))
            doc = await _refreshes(lab, till)
            last = doc["central_state"]["last_refresh"]
            assert last["refused"] and "targets" in last["problem"] and "\n" not in last["problem"], last
            assert doc["releases"] == [] and doc["installed"] == {}
            assert doc["central_state"]["versions"].get("root") in (None, 2)

            del fake.swap["/tuf/targets.json"]  # nothing lost: the real state still arrives
            while not _trust(lab, till).get("fresh"):
                await trio.sleep(0.1)
            assert _trust(lab, till)["versions"]["root"] == 2
            assert load_private_key(lab.private_key).public_key() != leaked.public_key()
        nursery.cancel_scope.cancel()


async def test_a_rollout_at_the_last_sequence_from_a_leaked_key_is_refused_and_a_newer_one_arrives(tmp_path):
    lab = Lab(tmp_path, devices=1)
    till = lab.devices[0]
    async with trio.open_nursery() as nursery:
        with trio.fail_after(120):
            await _central_with_release(nursery, lab, tmp_path, canary=True)  # canary elsewhere
            await _wait_targets_list(lab, f"{NAME}/1.0/rollout.msgpack", sequence=1)
            leaked = load_private_key(lab.private_key)
            _seeder(lab, "keys", "rotate", "targets", "--keys", str(lab.keys), "--releases", str(lab.releases))

            # Sequence 2^63-1, "active, everywhere": a document that could never be superseded.
            async with httpx.AsyncClient(verify=lab.central_tls) as client:
                real = Rollout.from_bytes((await client.get(f"{lab.seeder_url}/releases/{NAME}/1.0/rollout.msgpack")).content)
            forged = sign_rollout(replace(real, sequence=MAX_COUNT, ring="all", reached=("*",)), leaked).to_bytes()
            fake = await _start_fake(nursery, lab, lab.seeder_url, 1)
            fake.swap[f"/releases/{NAME}/1.0/rollout.msgpack"] = forged
            await lab.start_node(nursery, till, extra=_device_via(fake))
            log = lab.logs / f"{till.name}.log"
            while "rollout.refused" not in (log.read_text() if log.exists() else ""):
                await trio.sleep(0.1)
            refused = [line for line in log.read_text().splitlines() if "rollout.refused" in line]
            assert "does not match the digest in central's signed targets" in refused[0]
            held = till.data_dir / "rollouts" / f"{NAME}@1.0.msgpack"
            assert not held.exists() or Rollout.from_bytes(held.read_bytes()).sequence < MAX_COUNT
            assert (await _refreshes(lab, till, 1))["releases"] == []

            # A forgery is the source's fault, not the document's: central's own sequence 1 arrives once served.
            del fake.swap[f"/releases/{NAME}/1.0/rollout.msgpack"]
            while not held.exists():
                await trio.sleep(0.1)
            assert Rollout.from_bytes(held.read_bytes()).sequence == 1
            _release(lab, "pause", "1.0")  # central's next, legitimately signed rollout
            while not held.exists() or Rollout.from_bytes(held.read_bytes()).sequence != 2:
                await trio.sleep(0.1)
            assert Rollout.from_bytes(held.read_bytes()).state == "paused"
        nursery.cancel_scope.cancel()


async def test_a_revocation_cut_off_mid_fetch_arrives_on_a_later_poll(tmp_path):
    lab = Lab(tmp_path, devices=1)
    till = lab.devices[0]
    async with trio.open_nursery() as nursery:
        with trio.fail_after(90):
            await _central_with_release(nursery, lab, tmp_path)
            fake = await _start_fake(nursery, lab, lab.seeder_url, 1)
            await lab.start_node(nursery, till, extra=_device_via(fake))
            await _refreshes(lab, till)
            path = f"/releases/{NAME}/1.0/rollout.msgpack"
            fake.cut[path] = 2
            fake.cut["/tuf/timestamp.json"] = 1  # central's state itself cut once, too
            _release(lab, "revoke", "1.0")
            held = till.data_dir / "rollouts" / f"{NAME}@1.0.msgpack"
            while not held.exists():
                await trio.sleep(0.1)
            assert Rollout.from_bytes(held.read_bytes()).state == "revoked"
            assert fake.cut[path] == 0 and fake.cut["/tuf/timestamp.json"] == 0  # the cuts did happen
            text = (lab.logs / f"{till.name}.log").read_text()
            assert "rollout.unreachable" in text and "rollout.refused" not in text
        nursery.cancel_scope.cancel()


async def test_an_offline_store_past_expiry_keeps_serving_and_installs_nothing_new(tmp_path):
    lab = Lab(tmp_path, devices=1, timestamp_expiry_s=4)
    till = lab.devices[0]
    grace = {"central": {"expiry_grace_s": 0}}
    async with trio.open_nursery() as nursery:
        with trio.fail_after(150):
            await lab.start_central(nursery)
            for node in lab.nodes:
                await lab.start_node(nursery, node, extra=grace)
            await lab.publish(write_image(tmp_path / "a.img", 2, seed=1), "1.0", name=NAME)
            await lab.wait_installed(NAME, "1.0")
            lab.kill(till)
            await lab.publish(write_image(tmp_path / "b.img", 2, seed=2), "1.1", name=NAME)
            while not lab.installed(lab.cache, NAME, "1.1"):
                await trio.sleep(0.2)  # the cache fetched 1.1 for the store while the till was off
            os.kill(lab.pids["seeder"], signal.SIGTERM)  # the store's WAN is gone
            while _trust(lab, lab.cache).get("fresh", True):
                await trio.sleep(0.2)

            await lab.start_node(nursery, till, extra=grace)
            doc = await _refreshes(lab, till, 3)
            trust = doc["central_state"]
            assert not trust["fresh"] and "expired" in trust["why_not"] and "no new installs" in trust["why_not"], trust
            assert doc["installed"][NAME]["current"] == "1.0"
            assert lab.release_of(till, NAME, "1.1") is None
            # The cache keeps serving what it has to the store.
            assert lab.installed(lab.cache, NAME, "1.1")
            async with httpx.AsyncClient() as client:
                url = lab.status_of(lab.cache)["http_url"]
                assert (await client.get(f"{url}/releases/{NAME}/1.1/manifest.msgpack")).status_code == 200
        nursery.cancel_scope.cancel()


def _utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

