"""Central's one-time enrolment tokens: only each token's SHA-256 is kept, bound to a store, role and class,
expiring, and consumed once, atomically, by the enrolment that used it."""

from __future__ import annotations

import contextlib
import hashlib
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from posswarm.errors import PosswarmError
from posswarm.identity.certificate import check_names
from posswarm.sqlite_file import open_db, transaction
from posswarm.wallclock import now_ms

TOKENS_FILE = "enrolment-tokens.sqlite"  # in the seeder's data dir
PREFIX = "pse1_"  # says what a pasted string is; 192 random bits follow
_SHAPE = re.compile(r"^pse1_[A-Za-z0-9_-]{32}$")
MAX_TTL_S = 30 * 86400.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS token (
    sha256 TEXT PRIMARY KEY,
    store TEXT NOT NULL,
    role TEXT NOT NULL,
    device_class TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    used_ms INTEGER,
    used_by TEXT
) WITHOUT ROWID;
"""


class TokenRefused(PosswarmError):
    """A token that enrols nothing: unknown, used, expired, or for another store, role or class (one line)."""


@dataclass(frozen=True)
class Grant:
    """What a token lets its holder become."""

    store: str
    role: str
    device_class: str


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class TokenBook:
    """DATA_DIR/enrolment-tokens.sqlite (WAL, synchronous=FULL), shared by ``enroll-token`` and the running seeder."""

    def __init__(self, data_dir: Path) -> None:
        Path(data_dir).mkdir(parents=True, exist_ok=True)
        self.path = str(Path(data_dir) / TOKENS_FILE)
        self._db = open_db(self.path, "enrolment tokens", _SCHEMA)

    def issue(self, *, store: str, role: str, device_class: str = "", ttl_s: float = 86400.0,
              now: int | None = None) -> tuple[str, int]:
        """A new token and when it expires (ms); only its digest is written."""
        # The node id is only known when a node uses the token: check the rest with a stand-in for it.
        check_names("any-node", store, role, device_class or "any-class")
        if not 1 <= ttl_s <= MAX_TTL_S:
            raise PosswarmError(f"--ttl-s {ttl_s:g}: choose 1 s to {MAX_TTL_S:.0f} s (30 days)")
        token = PREFIX + secrets.token_urlsafe(24)
        created = now_ms() if now is None else now
        expires = created + int(ttl_s * 1000)
        with transaction(self._db, f"enrolment tokens {self.path}") as db:
            db.execute("INSERT INTO token (sha256, store, role, device_class, created_ms, expires_ms) "
                       "VALUES (?, ?, ?, ?, ?, ?)", (digest(token), store, role, device_class, created, expires))
        return token, expires

    @contextlib.contextmanager
    def consuming(self, token: str, *, node_id: str, store: str = "", role: str = "", device_class: str = "",
                  now: int) -> Iterator[Grant]:
        """Use ``token`` for ``node_id``: yields what it grants, inside the one transaction that marks it used.

        Anything raised inside (the certificate could not be issued) leaves the token unused. ``store``,
        ``role`` and ``device_class`` are what the node asks for ('' = whatever the token says).
        """
        if not isinstance(token, str) or not _SHAPE.match(token):
            raise TokenRefused(f"enrolment token: not a token central issues ({PREFIX}... and 32 characters); "
                               "copy it whole from `posswarm-seeder enroll-token`")
        with transaction(self._db, f"enrolment tokens {self.path}") as db:
            row = db.execute("SELECT store, role, device_class, expires_ms, used_ms, used_by FROM token WHERE sha256 = ?",
                             (digest(token),)).fetchone()
            if row is None:
                raise TokenRefused("enrolment token: not one this central issued (mistyped, or from another central)")
            granted, used_ms, used_by = Grant(*row[:3]), row[4], row[5]
            if used_ms is not None:
                raise TokenRefused(f"enrolment token: already used at {_when(used_ms)} by node {used_by}; a token "
                                   "enrols one node: issue another with `posswarm-seeder enroll-token`")
            if now >= row[3]:
                raise TokenRefused(f"enrolment token: expired at {_when(row[3])}; issue another with "
                                   "`posswarm-seeder enroll-token`")
            for what, asked, bound in (("store", store, granted.store), ("role", role, granted.role),
                                       ("class", device_class, granted.device_class)):
                if asked and bound and asked != bound:
                    raise TokenRefused(f"enrolment token: it is for {what} {bound!r}, this node asks for {asked!r}; "
                                       f"use a token issued for {what} {asked!r}")
            chosen = granted.device_class or device_class or ("cache" if granted.role == "cache" else "pos")
            grant = Grant(granted.store, granted.role, chosen)
            check_names(node_id, grant.store, grant.role, grant.device_class)
            db.execute("UPDATE token SET used_ms = ?, used_by = ? WHERE sha256 = ? AND used_ms IS NULL",
                       (now, node_id, digest(token)))
            yield grant

    def close(self) -> None:
        self._db.close()

