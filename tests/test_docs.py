"""The docs a newcomer reads point at things that exist: every relative link, and every path architecture.md names."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from posswarm.lifecycle import ReleaseState

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_CODE_PATH = re.compile(r"`((?:posswarm|seeder|tracker|tools|tests|docs|contrib)/[A-Za-z0-9_./-]*)`")

def _links(doc: Path) -> list[str]:
    return [m.group(1) for m in _LINK.finditer(doc.read_text())]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_at_a_file_in_the_repository(doc):
    broken = []
    for target in _links(doc):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue  # http(s)://, mailto: and anchors in the same page
        path = (doc.parent / target.split("#", 1)[0]).resolve()
        if not path.is_relative_to(ROOT) or not path.exists():
            broken.append(target)
    assert broken == [], f"{doc.relative_to(ROOT)} links to files a clone does not have"


def test_the_docs_have_links_to_check():
    assert "docs/architecture.md" in _links(ROOT / "README.md")
    assert all(_links(doc) for doc in DOCS if doc.name in ("README.md", "architecture.md"))


def test_every_path_architecture_md_names_exists():
    named = set(_CODE_PATH.findall((ROOT / "docs" / "architecture.md").read_text()))
    assert len(named) > 50
    missing = {p for p in named if "*" not in p and not (ROOT / p).exists()}
    assert missing == set()


def test_every_release_state_is_documented():
    text = (ROOT / "docs" / "architecture.md").read_text()
    assert [s.value for s in ReleaseState if f"| `{s.value}` |" not in text] == []
