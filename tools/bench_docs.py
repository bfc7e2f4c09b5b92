"""Benchmark results as markdown, and the generated region of docs/benchmarks.md that holds them (pure)."""

from __future__ import annotations

import json
import re

REGION_BEGIN, REGION_END = "<!-- posswarm-bench all:begin -->", "<!-- posswarm-bench all:end -->"
REGION_TITLE = "## The latest `posswarm-bench all` run (generated: do not edit by hand)"
REGION_INTRO = (
    "Every figure in this section was written by `posswarm-bench all` from the JSON of the run it names, "
    "stamped with the commit it ran (`git rev-parse HEAD`; *dirty* = the tree had changes besides this file "
    "and its plots), the date, the machine and its load. Rerun it to check; the sections further down "
    "explain the figures and keep earlier runs for comparison."
)
_BLOCK = re.compile(r"<!-- bench:([a-z0-9-]+):begin -->\n(.*?)\n<!-- bench:\1:end -->", re.S)
MAX_COLUMNS = 9  # wider tables read better turned on their side
MAX_CELL = 80


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".") if abs(value) < 1000 else f"{value:,.1f}"
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


def flatten(doc: dict, prefix: str = "") -> dict:
    """Nested dicts as one level of dotted keys; lists stay values."""
    flat = {}
    for key, value in doc.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _grid(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]


def records(items: list[dict]) -> list[str]:
    """A list of records as a table: a row each, or a column each when they have many fields."""
    flat = [flatten(i) for i in items]
    keys = list(dict.fromkeys(k for f in flat for k in f if not _is_records(f[k])))
    if len(keys) <= MAX_COLUMNS:
        return _grid(keys, [[f.get(k) for k in keys] for f in flat])
    names = [_name(f, n) for n, f in enumerate(flat, 1)]
    return _grid(["", *names], [[k, *(f.get(k) for f in flat)] for k in keys])


def _name(flat: dict, n: int) -> str:
    text = [str(v) for v in flat.values() if isinstance(v, str)]
    return " ".join(text[:2]) if text else f"#{n}"


def _is_records(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def markdown(doc) -> str:
    """Any benchmark's JSON as markdown: scalars as a two-column table, each list of records as a table of its own."""
    if _is_records(doc):
        return "\n".join(records(doc))
    if not isinstance(doc, dict):
        return _cell(doc)
    flat = flatten(doc)
    scalars = [[k, v] for k, v in flat.items() if not _is_records(v)]
    parts = ["\n".join(_grid(["measure", "value"], scalars))] if scalars else []
    for key, value in flat.items():
        if _is_records(value):
            parts.append(f"`{key}`:\n\n" + "\n".join(records(value)))
    return "\n\n".join(parts)


def blocks(body: str) -> dict[str, str]:
    """The generated blocks inside the region of ``body``, by benchmark name, in the order they appear."""
    start, end = body.find(REGION_BEGIN), body.find(REGION_END)
    if start < 0 or end < start:
        return {}
    return {m.group(1): m.group(2) for m in _BLOCK.finditer(body, start, end)}


def update(body: str, name: str, text: str, order: list[str]) -> str:
    """``body`` with the block ``name`` set to ``text``; the region is created before the first section if missing."""
    found = blocks(body)
    found[name] = text.strip("\n")
    names = [n for n in order if n in found] + [n for n in found if n not in order]
    region = "\n\n".join([REGION_BEGIN, REGION_TITLE, REGION_INTRO,
                          *(f"<!-- bench:{n}:begin -->\n{found[n]}\n<!-- bench:{n}:end -->" for n in names),
                          REGION_END])
    start, end = body.find(REGION_BEGIN), body.find(REGION_END)
    if 0 <= start < end:
        return body[:start] + region + body[end + len(REGION_END):]
    first = body.find("\n## ")
    if first < 0:
        return body.rstrip("\n") + "\n\n" + region + "\n"
    return body[: first + 1] + region + "\n\n" + body[first + 1:]
