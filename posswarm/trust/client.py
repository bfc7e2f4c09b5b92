"""Follow central's signed state with python-tuf's client (ngclient) from a catalog source, in a worker thread.

The metadata dir under the node's data_dir keeps the newest verified root, timestamp, snapshot and targets
across restarts, so an older snapshot or timestamp is refused even after a reboot. A cache relays exactly
those files to its devices (``relay_files``); they verify them with the same root.
"""

from __future__ import annotations

import shutil
import ssl
import threading
import time
from dataclasses import dataclass
from datetime import timezone
from pathlib import Path

import httpx
import trio
from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import Metadata, Root, Snapshot, Targets, Timestamp
from tuf.ngclient import FetcherInterface, Updater, UpdaterConfig

from posswarm import logs
from posswarm.errors import PosswarmError, Unreachable
from posswarm.identity.revocations import RevokedNodes, entries_of
from posswarm.keys import KeyRing
from posswarm.trust.roles import release_keys, role_public_keys
from posswarm.trust.state import CentralState, TrustError, releases_of

log = logs.get("trust")

# Bounds on what a catalog source may send before python-tuf parses it.
LIMITS = UpdaterConfig(max_root_rotations=64, root_max_length=256 * 1024, timestamp_max_length=16 * 1024,
                       snapshot_max_length=256 * 1024, targets_max_length=32 * 1024 * 1024)
ROLE_FILES = ("timestamp.json", "snapshot.json", "targets.json")
# A refresh is four or five GETs (root N+1, timestamp, snapshot, targets); on a new client each paid a TLS
# handshake first, on the path from publish to a cache knowing of the release. Kept below central's 75 s and a
# cache's catalog server's keep-alive, so the server never closes a connection this client is about to reuse.
KEEP_ALIVE_S = 60.0
MAX_SOURCES = 8  # kept clients: a device's sources are its store's caches, and addresses may change


ERROR_BODY_MAX = 16 * 1024  # an error answer longer than this costs its connection, not our memory


def _drain(response: httpx.Response) -> None:
    read = 0
    try:
        for part in response.iter_raw():
            read += len(part)
            if read > ERROR_BODY_MAX:
                break
    except httpx.HTTPError:
        pass
    finally:
        response.close()


class _Fetcher(FetcherInterface):
    """python-tuf's downloads over one httpx client; an HTTP error status is a DownloadHTTPError."""

    def __init__(self, client: httpx.Client) -> None:
        self._client = client

    def _fetch(self, url: str):
        try:
            response = self._client.send(self._client.build_request("GET", url), stream=True)
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
            # A kept connection the source closed as this request went out: once more, on a new connection.
            response = self._client.send(self._client.build_request("GET", url), stream=True)
        if response.status_code != 200:
            _drain(response)  # read to its end, so the connection is kept (every refresh asks for a root N+1: 404)
            raise tuf_errors.DownloadHTTPError(f"{url}: HTTP {response.status_code}", response.status_code)
        return self._body(response)

    @staticmethod
    def _body(response: httpx.Response):
        try:
            yield from response.iter_bytes()
        finally:
            response.close()


@dataclass
class Outcome:
    """The last refresh: when, from where, and what went wrong (None = it verified)."""

    url: str
    at: float
    problem: str | None = None
    verdict: bool = False  # a signature/validation failure, not a network one


class CentralTrust:
    """The node's root of trust and the newest central state verified under it."""

    def __init__(self, root_file: Path, metadata_dir: Path, *, grace_s: float, timeout_s: float = 15.0) -> None:
        self.root_file = root_file
        self.dir = metadata_dir
        self.grace_s = grace_s
        self.timeout_s = timeout_s
        self.keyring = KeyRing([])
        self.enrolment_keys: tuple = ()  # who may certify store peers (the root's enrolment role)
        self.sku_keys = KeyRing([])  # who signs SKU entries (the root's sku role); one ring, replaced in place
        self.revoked = RevokedNodes()  # node certificates the verified targets revoke; replaced in place
        self.state: CentralState | None = None
        self.last: Outcome | None = None
        self.refused: dict[str, str] = {}  # source url -> the last verdict against it
        # How a source's TLS is checked: a cache's, central's CA and host name; a device's, a cache of its store.
        self.verify: ssl.SSLContext | bool = True
        self._clients: dict[tuple[str, int], httpx.Client] = {}  # (source, id(verify)) -> its kept connection
        self._clients_lock = threading.Lock()  # refreshes run in worker threads

    def load(self) -> None:
        """Start from the configured root once; afterwards from the newest root and state verified before."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            if not (self.dir / "root.json").exists():
                shutil.copyfile(self.root_file, self.dir / "root.json")
        except OSError as exc:
            raise PosswarmError(f"root of trust {self.root_file}: cannot copy it into {self.dir} ({exc.strerror}; "
                                "check the path and the data_dir permissions)") from None
        root = self._local_root()
        self._take_keys(root)
        try:
            self.state = _verified_local(self.dir, root)
        except (OSError, ValueError, tuf_errors.RepositoryError, PosswarmError):
            self.state = None  # none yet, or an interrupted write: the next refresh fetches it again
        else:
            self.revoked.replace(self.state.revoked)

    def _take_keys(self, root: Metadata[Root]) -> None:
        """Every role key the parts of the node check with, from the newest verified root."""
        self.keyring.replace(release_keys(root.signed).keys())
        self.enrolment_keys = tuple(role_public_keys(root.signed, "enrolment"))
        self.sku_keys.replace(role_public_keys(root.signed, "sku"))

    def _local_root(self) -> Metadata[Root]:
        try:
            data = (self.dir / "root.json").read_bytes()
            root = Metadata[Root].from_bytes(data)
            root.verify_delegate("root", root)
            return root
        except (OSError, ValueError, tuf_errors.RepositoryError) as exc:
            raise PosswarmError(f"root of trust {self.dir / 'root.json'}: not a valid self-signed TUF root ({exc}); "
                                "copy central's root.json (written by `posswarm-seeder keys init`) there") from None

    async def refresh(self, url: str) -> CentralState:
        """Central's newest signed state via ``url``: Unreachable for a network failure (retried, never
        remembered), TrustError for a refusal (a bad signature, a replay, an expired timestamp)."""
        try:
            state = await trio.to_thread.run_sync(self._refresh_sync, url)
        except (Unreachable, TrustError) as exc:
            self.last = Outcome(url, time.time(), str(exc), isinstance(exc, TrustError))
            if isinstance(exc, TrustError):
                self.refused[url] = str(exc)
            raise
        self.state, self.last = state, Outcome(url, time.time())
        before = self.revoked.entries()
        self.revoked.replace(state.revoked)
        if self.revoked.entries() != before:
            # A source's certificate is checked in the TLS handshake (posswarm/catalog/store_source.py): a kept
            # connection was checked against the list before, so every one is opened, and checked, again.
            self.close()
        self.refused.pop(url, None)
        return state

    def _refresh_sync(self, url: str) -> CentralState:
        base = url.rstrip("/")
        client = self._client(base)  # kept, with its connection, for the next refresh
        try:
            updater = Updater(str(self.dir), f"{base}/tuf/", fetcher=_Fetcher(client), config=LIMITS, bootstrap=None)
            updater.refresh()
        except (tuf_errors.DownloadError, httpx.HTTPError) as exc:
            raise Unreachable(f"central state via {base}: cannot fetch it ({_first_line(exc)}); is the source up?",
                              _first_line(exc)) from None
        except tuf_errors.ExpiredMetadataError as exc:
            raise TrustError(f"central state via {base}: refused, {_first_line(exc)} (central's timestamp "
                             "expired: an offline or replaying source; nothing new is installed from it)") from None
        except OSError as exc:  # a full or read-only data disk: not a verdict on central
            raise Unreachable(f"central state via {base}: cannot keep it in {self.dir} ({exc.strerror}; free space "
                              "on the data disk, the node retries)", str(exc.strerror)) from None
        except (tuf_errors.RepositoryError, ValueError) as exc:
            raise TrustError(f"central state via {base}: refused, {type(exc).__name__}: {_first_line(exc)} "
                             "(a replayed, forged or stripped document; kept the state verified before)") from None
        try:
            root = self._local_root()
            state = _verified_local(self.dir, root)
        except (OSError, ValueError, tuf_errors.RepositoryError, PosswarmError) as exc:
            raise TrustError(f"central state via {base}: refused, what python-tuf kept in {self.dir} does not "
                             f"verify ({_first_line(exc)}); the next refresh fetches it again") from None
        self._take_keys(root)
        return state

    def _client(self, base: str) -> httpx.Client:
        key = (base, id(self.verify))
        with self._clients_lock:
            client = self._clients.get(key)
            if client is None:
                while len(self._clients) >= MAX_SOURCES:
                    self._clients.pop(next(iter(self._clients))).close()
                client = self._clients[key] = httpx.Client(
                    timeout=self.timeout_s, verify=self.verify, limits=httpx.Limits(keepalive_expiry=KEEP_ALIVE_S))
            return client

    def close(self) -> None:
        """Close the kept connections to the sources."""
        with self._clients_lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()

    def fresh(self, now: float) -> bool:
        return self.state is not None and self.state.fresh(now, self.grace_s)

    def why_not_fresh(self, now: float) -> str | None:
        """One line for status and the log when new installs are held, None while central's state is fresh."""
        if self.state is None:
            return "no verified central state yet (never reached a source with a valid timestamp)"
        if self.state.fresh(now, self.grace_s):
            return None
        return (f"central's signed state expired {int(now - self.state.expires)} s ago (grace {int(self.grace_s)} s): "
                "offline or cut off from central; serving what this node has, starting no new installs")

    def relay_files(self) -> dict[str, bytes]:
        """The verified metadata files as a cache serves them under ``/tuf/`` (``N.root.json`` and the roles)."""
        files = {}
        for path in sorted((self.dir / "root_history").glob("*.root.json")):
            files[path.name] = path.read_bytes()
        for name in ROLE_FILES:
            path = self.dir / name
            if path.exists():
                files[name] = path.read_bytes()
        return files

    def status(self, now: float) -> dict:
        s = self.state
        return {
            "fresh": self.fresh(now),
            "why_not": self.why_not_fresh(now),
            "expires": s.expires if s else None,
            "versions": s.versions if s else {},
            "release_keys": self.keyring.ids(),
            "revoked_nodes": len(self.revoked),
            "last_refresh": None if self.last is None else {
                "url": self.last.url, "at": self.last.at, "problem": self.last.problem, "refused": self.last.verdict},
            "refused": dict(self.refused),
        }


def _verified_local(directory: Path, root: Metadata[Root]) -> CentralState:
    """The state in ``directory``, each role checked against ``root`` and its parent (no expiry check:
    this is what was verified before; freshness is judged by ``CentralState.fresh``)."""
    timestamp = Metadata[Timestamp].from_bytes((directory / "timestamp.json").read_bytes())
    root.verify_delegate("timestamp", timestamp)
    snapshot = Metadata[Snapshot].from_bytes((directory / "snapshot.json").read_bytes())
    root.verify_delegate("snapshot", snapshot)
    targets = Metadata[Targets].from_bytes((directory / "targets.json").read_bytes())
    root.verify_delegate("targets", targets)
    if snapshot.signed.meta["targets.json"].version != targets.signed.version:
        raise tuf_errors.RepositoryError("snapshot and targets disagree")
    releases, skipped = releases_of(targets.signed)
    expires = timestamp.signed.expires.replace(tzinfo=timezone.utc).timestamp()
    versions = {"root": root.signed.version, "timestamp": timestamp.signed.version,
                "snapshot": snapshot.signed.version, "targets": targets.signed.version}
    return CentralState(releases, versions, expires, skipped, entries_of(targets.signed))


def _first_line(exc: BaseException) -> str:
    """The error's first line, and its root cause's (python-tuf's "Failed to download" hides a TLS refusal)."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    cause = exc
    while cause.__cause__ is not None or cause.__context__ is not None:
        cause = cause.__cause__ or cause.__context__
    if cause is not exc and str(cause):
        text = f"{text}: {str(cause).splitlines()[0]}"
    return text[:300]
