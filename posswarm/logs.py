"""Structured key=value logging to stderr (journald collects it); no prints."""

from __future__ import annotations

import logging
import sys

import structlog


def configure(level: str = "info", *, component: str | None = None) -> None:
    """Send key=value lines to stderr at ``level``; call once from each command's main."""
    logging.basicConfig(stream=sys.stderr, level=level.upper(), format="%(message)s")
    for chatty in ("httpx", "httpcore", "hypercorn.access"):  # a line per request drowns what matters
        logging.getLogger(chatty).setLevel(logging.WARNING)
    processors: list = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
    ]
    if component:
        processors.insert(0, structlog.contextvars.merge_contextvars)
        structlog.contextvars.bind_contextvars(component=component)
    processors.append(
        structlog.processors.KeyValueRenderer(key_order=["ts", "level", "component", "logger_name", "event"], drop_missing=True)
    )
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        # sys.stderr looked up per logger, not once: tests (and daemons) may swap it after configure()
        logger_factory=lambda *args: structlog.PrintLogger(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def get(name: str):
    """A logger whose lines carry ``logger=name``: ``get("node").info("release.installed", name=..)``.

    Lazy: safe at module level, since it follows whatever ``configure`` set up by the time it logs.
    """
    return structlog.get_logger(logger_name=name)
