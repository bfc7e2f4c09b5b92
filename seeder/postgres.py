"""Central's PostgreSQL stores (sales, the SKU catalog): which URLs name one, connecting with psycopg 3, and the URL as
logged (without its password)."""

from __future__ import annotations

from posswarm.errors import PosswarmError

SCHEMES = ("postgresql://", "postgres://")


def is_url(url: str) -> bool:
    """Whether a ``--sales-db`` / ``--sku-db`` value names PostgreSQL (else it is a SQLite path or ``sqlite:///path``)."""
    return url.startswith(SCHEMES)


def sqlite_path(url: str) -> str:
    return url.removeprefix("sqlite://")


def redact(dsn: str) -> str:
    head, at, tail = dsn.rpartition("@")
    return f"{head.split('://')[0]}://***@{tail}" if at else dsn


def first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def psycopg_module(what: str):
    """psycopg, or a PosswarmError naming ``what`` needs it."""
    try:
        import psycopg
    except ImportError:
        raise PosswarmError(f"{what} postgresql: psycopg is not installed (pip install 'psycopg[binary]')") from None
    return psycopg


def connect(dsn: str, what: str, **kwargs):
    """A psycopg connection to ``dsn``; a refusal is one line naming ``what``, the server and the fix."""
    psycopg = psycopg_module(what)
    try:
        return psycopg.connect(dsn, **kwargs)
    except psycopg.Error as exc:
        raise PosswarmError(f"{what} {redact(dsn)}: {first_line(exc)}; check the URL and server") from None
