"""Check an OCI image layout (what a registry export or CI writes) before it is published as a release."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from posswarm.errors import PosswarmError

MAX_JSON_BYTES = 4 << 20


def is_layout(path: Path) -> bool:
    return path.is_dir() and (path / "oci-layout").is_file()


def check_layout(path: Path) -> int:
    """Every blob named by index.json and its manifests is present with the digest it is named by.

    Returns the number of blobs checked; PosswarmError names the layout, the blob and the fix. Layers
    shared between releases are the same bytes, so they cut into the same chunks and are stored once.
    """
    layout = _json(path / "oci-layout", path)
    if layout.get("imageLayoutVersion") != "1.0.0":
        raise PosswarmError(f"OCI layout {path}: imageLayoutVersion {layout.get('imageLayoutVersion')!r} is not 1.0.0")
    index = _json(path / "index.json", path)
    pending = list(index.get("manifests", []))
    if not pending:
        raise PosswarmError(f"OCI layout {path}: index.json lists no manifests (export the image again)")
    checked: set[str] = set()
    while pending:
        descriptor = pending.pop()
        digest = descriptor.get("digest", "") if isinstance(descriptor, dict) else ""
        if digest in checked:
            continue
        blob = _blob(path, digest)
        checked.add(digest)
        media = descriptor.get("mediaType", "")
        if media.endswith(("manifest.v1+json", "index.v1+json")) or "manifest" in media:
            doc = _json(blob, path)
            pending.extend(doc.get("manifests", []))
            pending.extend(doc.get("layers", []))
            if isinstance(doc.get("config"), dict):
                pending.append(doc["config"])
    return len(checked)


def _blob(layout: Path, digest: str) -> Path:
    algorithm, _, hexdigest = digest.partition(":")
    if algorithm != "sha256" or len(hexdigest) != 64 or not all(c in "0123456789abcdef" for c in hexdigest):
        raise PosswarmError(f"OCI layout {layout}: descriptor digest {digest[:80]!r} is not sha256:<64 hex>")
    blob = layout / "blobs" / "sha256" / hexdigest
    if not blob.is_file():
        raise PosswarmError(f"OCI layout {layout}: blob {digest} is missing (export the image again)")
    h = hashlib.sha256()
    with open(blob, "rb") as f:
        while data := f.read(1 << 20):
            h.update(data)
    if h.hexdigest() != hexdigest:
        raise PosswarmError(f"OCI layout {layout}: blob {digest} does not match its digest (corrupt export)")
    return blob


def _json(path: Path, layout: Path) -> dict:
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            raise PosswarmError(f"OCI layout {layout}: {path.name} is larger than {MAX_JSON_BYTES} bytes")
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise PosswarmError(f"OCI layout {layout}: {path.name} is missing") from None
    except (OSError, ValueError) as exc:
        raise PosswarmError(f"OCI layout {layout}: {path.name} is not readable JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise PosswarmError(f"OCI layout {layout}: {path.name} is not a JSON object")
    return doc
