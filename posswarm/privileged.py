"""The privileged activation path: the sandboxed node asks, through a spool directory, and a root oneshot
(``posswarm activate-pending``, started by ``posswarm-activate.path``) checks the request against the node's
``installed/`` tree, rebuilds the payload from the signed release into a directory of root's own, runs
``install.privileged_hook`` on that copy and answers with a result file."""

from __future__ import annotations

import json
import os
import shutil
import stat
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from posswarm import health, install, logs
from posswarm.chunks import chunk_relpath
from posswarm.config import NodeConfig
from posswarm.datadir import DataDir
from posswarm.errors import PosswarmError
from posswarm.fsync import fsync_dir
from posswarm.manifest import MAX_MANIFEST_BYTES, Manifest, ManifestError, check_component, verify_manifest
from posswarm.release import MANIFEST_NAME
from posswarm.trust.roles import root_release_keys

log = logs.get("privileged")

REQUEST = ".request"
RESULT = ".result"
#: A request is a handful of short fields; a result holds at most the hook's kept output tail.
_REQUEST_LIMIT = 4096
_RESULT_LIMIT = 4 * health.OUTPUT_LIMIT + 4096
#: Requests one ``activate-pending`` run takes on, so a node flooding the spool cannot keep root busy forever.
_BATCH = 64
MAX_ROOT_BYTES = 1 << 20  # a TUF root with a handful of keys is a few KiB
_POLL_S = 0.1
WHAT = "privileged hook"


def spool_dir(data_dir: Path) -> Path:
    """Where requests and results live: ``DATA_DIR/activate`` (what posswarm-activate.path watches)."""
    return DataDir(data_dir).activation_spool


@dataclass(frozen=True)
class Request:
    """What the node asks root to apply: checked against the file system before anything runs."""

    release: str
    version: str
    kind: str
    path: str
    deadline: float  # wall-clock time the node stops waiting; root does not start a hook past it

    @property
    def stem(self) -> str:
        return f"{self.release}@{self.version}"


# --- the node's side --------------------------------------------------------------------------------------


def request_and_wait(config: NodeConfig, *, name: str, version: str, kind: str, path: Path) -> str | None:
    """Ask root to run the privileged hook on the release just switched to; None when it passed, else why not.

    Blocking (call it from a thread). No result within ``install.privileged_timeout_s`` counts as a failed hook.
    """
    spool = spool_dir(config.data_dir)
    spool.mkdir(mode=0o700, exist_ok=True)
    req = Request(name, version, kind, str(path), time.time() + config.privileged_timeout_s)
    result_file = spool / f"{req.stem}{RESULT}"
    result_file.unlink(missing_ok=True)  # an answer to an earlier request for the same version means nothing now
    _write_atomically(spool, f"{req.stem}{REQUEST}", json.dumps(asdict(req)).encode())
    log.info("privileged.requested", release=f"{name} {version}", spool=str(spool))
    end = time.monotonic() + config.privileged_timeout_s
    while not result_file.exists():
        if time.monotonic() >= end:
            (spool / f"{req.stem}{REQUEST}").unlink(missing_ok=True)  # root must not apply it after we gave up
            return (f"{WHAT} {config.privileged_hook!r}: no result within {config.privileged_timeout_s:g} s "
                    f"(is posswarm-activate.path enabled and watching {spool}?)")
        time.sleep(_POLL_S)
    try:
        answer = json.loads(_read_bounded(result_file, _RESULT_LIMIT))
        result_file.unlink()
        if not isinstance(answer, dict) or (answer.get("release"), answer.get("version")) != (name, version):
            raise ValueError("it answers another request")
        problem = answer.get("problem")
        if problem is not None and not isinstance(problem, str):
            raise ValueError("'problem' is not a string")
    except (PosswarmError, OSError, ValueError) as exc:
        return f"{WHAT}: result file {result_file} is unreadable ({exc}); check the posswarm-activate journal"
    return problem or None


# --- root's side ------------------------------------------------------------------------------------------


def activate_pending(config: NodeConfig, work_dir: Path) -> int:
    """Answer every request in the spool; returns how many were answered. What root runs, once per trigger.

    ``work_dir`` is root's alone (posswarm-activate.service's StateDirectory): each payload is rebuilt there
    from the signed release before its hook runs.
    """
    spool = spool_dir(config.data_dir)
    answered = 0
    for _ in range(_BATCH):
        pending = sorted(p for p in spool.glob(f"*{REQUEST}") if not p.name.startswith("."))
        if not pending:
            break
        request_file = pending[0]
        stem = request_file.name[: -len(REQUEST)]
        try:
            req = _parse_request(_read_bounded(request_file, _REQUEST_LIMIT), stem)
            problem = _apply(config, req, work_dir)
            release, version = req.release, req.version
        except PosswarmError as exc:
            problem = str(exc)
            release, version = stem.partition("@")[::2]
        request_file.unlink(missing_ok=True)  # first: the path unit must not fire again for it
        outcome = {"release": release, "version": version, "problem": problem, "finished": time.time()}
        _write_atomically(spool, f"{stem}{RESULT}", json.dumps(outcome).encode())
        if problem:
            log.error("privileged.failed", release=f"{release} {version}", reason=problem)
        else:
            log.info("privileged.applied", release=f"{release} {version}")
        answered += 1
    return answered


def _parse_request(raw: bytes, stem: str) -> Request:
    where = f"privileged request {stem}"
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise PosswarmError(f"{where}: not JSON ({exc}); refused") from None
    fields = {"release": str, "version": str, "kind": str, "path": str, "deadline": (int, float)}
    if not isinstance(doc, dict) or set(doc) != set(fields) or not all(
            isinstance(doc[k], t) and not isinstance(doc[k], bool) for k, t in fields.items()):
        raise PosswarmError(f"{where}: fields must be exactly {', '.join(fields)} with the right types; refused")
    try:
        check_component(doc["release"], "release")
        check_component(doc["version"], "version")
    except ManifestError as exc:
        raise PosswarmError(f"{where}: {exc}; refused") from None
    req = Request(**doc)
    if req.stem != stem:
        raise PosswarmError(f"{where}: names {req.stem} inside; refused")
    return req


def _apply(config: NodeConfig, req: Request, work_dir: Path) -> str | None:
    """Run the hook when the request matches what the node has really installed; why not otherwise."""
    where = f"{WHAT} for {req.release} {req.version}"
    if not config.privileged_hook:
        return f"{where}: install.privileged_hook is not set in the config root reads; refused"
    installed = (config.data_dir / "installed").resolve()
    release_root = installed / req.release
    payload = Path(req.path).resolve()
    # resolve() follows every symlink: a payload path (or version directory) pointing out of installed/ fails here
    if payload.parent != release_root or payload.name != req.version or not payload.is_dir():
        return f"{where}: payload path {req.path} is not installed/{req.release}/{req.version} under {installed}; refused"
    current = install.current_version(release_root)
    if current != req.version:
        return f"{where}: installed/{req.release}/current points at {current or 'nothing'}, not {req.version}; refused"
    left = req.deadline - time.time()
    if left <= 0:
        return f"{where}: the node stopped waiting {-left:.0f} s ago; refused"
    try:
        copy = _verified_copy(config, req, work_dir)
    except PosswarmError as exc:
        return f"{where}: {exc}; refused"
    except OSError as exc:  # root's disk, not the request: say so, the node rolls back and a later try may pass
        return f"{where}: cannot build root's copy in {work_dir} ({exc.strerror}); refused"
    timeout_s = min(config.privileged_timeout_s, req.deadline - time.time())
    try:
        done = health.run(config.privileged_hook, cwd=copy, timeout_s=timeout_s,
                          env=health.environment(name=req.release, version=req.version, path=copy, kind=req.kind))
    finally:
        shutil.rmtree(copy.parent, ignore_errors=True)
    return health.explain(done, what=WHAT, command=config.privileged_hook, timeout_s=timeout_s)


def _release_keys(config: NodeConfig):
    """The release keys root trusts: of the configured root of trust, or of the node's newer root when that one
    is signed by the configured root (the node's data dir hands it over; only its signatures count)."""
    node_root = config.data_dir / "tuf" / "root.json"
    configured = _read_bounded(config.root, MAX_ROOT_BYTES)  # PosswarmError naming the file if unreadable
    try:
        newer = _read_bounded(node_root, MAX_ROOT_BYTES)
    except PosswarmError:
        newer = None
    try:
        return root_release_keys(configured, newer)
    except ValueError as exc:
        raise PosswarmError(f"root of trust {config.root}: {exc}") from None


def _verified_copy(config: NodeConfig, req: Request, work_dir: Path) -> Path:
    """Rebuild the payload from the node's release directory into ``work_dir``, checked against the signed manifest.

    The node's installed copy is the node's to change at any moment (it may be the one compromised), so root
    runs its hook on bytes it assembled itself and checked against the central key: what a hook writes to a
    partition is what central signed, or nothing.
    """
    release_dir = config.data_dir / "releases" / req.release / req.version
    m = verify_manifest(_read_bounded(release_dir / MANIFEST_NAME, MAX_MANIFEST_BYTES), _release_keys(config))
    if (m.name, m.version, m.kind) != (req.release, req.version, req.kind):
        raise PosswarmError(f"the signed manifest is {m.name} {m.version} ({m.kind}), not what was asked ({req.kind})")
    _check_chunk_files(m, release_dir)
    work_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    root = work_dir / req.release
    shutil.rmtree(root, ignore_errors=True)  # only root writes here: a leftover is a run cut short
    return install.assemble(m, release_dir, root)


def _check_chunk_files(m: Manifest, release_dir: Path) -> None:
    # assemble() reads each chunk whole: a symlink to /dev/zero or an oversized file must not get that far
    for chunk in m.unique_chunks():
        path = release_dir / chunk_relpath(chunk.digest)
        try:
            st = os.lstat(path)
        except OSError as exc:
            raise PosswarmError(f"chunk {chunk.hex[:16]} cannot be read ({exc.strerror})") from None
        if not stat.S_ISREG(st.st_mode) or st.st_size != chunk.size:
            raise PosswarmError(f"chunk {chunk.hex[:16]} is not a regular file of {chunk.size} bytes")


# --- files both sides trust only so far ----------------------------------------------------------------------


def _read_bounded(path: Path, limit: int) -> bytes:
    """At most ``limit`` bytes of a regular file, never following a symlink (the spool is the node's to write)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise PosswarmError(f"{path}: cannot be opened ({exc.strerror}); refused") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise PosswarmError(f"{path}: not a regular file; refused")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise PosswarmError(f"{path}: larger than {limit} bytes; refused")
    return data


def _write_atomically(directory: Path, name: str, data: bytes) -> None:
    """Write a temp file (created fresh, never through a planted symlink), fsync, rename into place, fsync dir."""
    tmp = directory / f".{name}.tmp"
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    owner = os.stat(directory)
    if os.geteuid() == 0 and owner.st_uid != 0:
        os.fchown(fd, owner.st_uid, owner.st_gid)  # root answers in the node's spool: the node must read it
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, directory / name)
    fsync_dir(directory)
