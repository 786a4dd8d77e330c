"""Locks: the pinned resolution of an app's requirements, stored with the release.

A lock is `uv pip compile` output under a small header saying what it was
resolved from:

    # roost-lock: v1
    # requirements: sha256:<hash of the requirements files>
    # python: cpython-3.11.2-x86_64 /usr/bin/python3.11

A later build whose requirements files and interpreter hash the same reuses
the lock as is (no resolution, no network), which in turn names the same
dependency layer: that is how a code-only redeploy installs nothing.
Requirements that point at local paths or editables are never reused, since
their content can change without the file changing.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from roost.builder.errors import BuildError

HEADER_VERSION = "v1"
# Added to every compile so gunicorn is present; an app that pins its own
# gunicorn gets its pin (both inputs are resolved together).
EXTRA_REQUIREMENTS = "gunicorn\n"

_INCLUDE = re.compile(r"^\s*(-r|--requirement|-c|--constraint)\s*=?\s*(\S+)")
_LOCAL = re.compile(r"^\s*(-e|--editable)\b|^\s*(\.{1,2}/|/|file:)|@\s*file:")


def requirements_digest(checkout: Path, requirements: str | None) -> str | None:
    """Hash of the requirements file and the files it includes; None: never reuse."""
    h = hashlib.sha256()
    h.update(EXTRA_REQUIREMENTS.encode())
    if requirements is None:
        return "sha256:" + h.hexdigest()
    root = checkout.resolve()
    seen: set[Path] = set()
    todo = [checkout / requirements]
    while todo:
        path = todo.pop(0).resolve()
        if path in seen:
            continue
        seen.add(path)
        if not path.is_relative_to(root) or not path.is_file():
            return None  # outside the checkout or missing: let uv decide, never reuse
        text = path.read_text(encoding="utf-8", errors="replace")
        h.update(str(path.relative_to(root)).encode() + b"\0" + text.encode() + b"\0")
        for line in text.splitlines():
            if _LOCAL.search(line):
                return None
            m = _INCLUDE.match(line)
            if m:
                todo.append(path.parent / m.group(2))
    return "sha256:" + h.hexdigest()


def make_lock(body: str, req_digest: str | None, python_id: str) -> str:
    header = [
        f"# roost-lock: {HEADER_VERSION}",
        f"# requirements: {req_digest or 'unreusable'}",
        f"# python: {python_id}",
    ]
    return "\n".join(header) + "\n" + body.strip("\n") + "\n"


def parse_header(lock: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in lock.splitlines()[:3]:
        m = re.match(r"# (roost-lock|requirements|python): (.*)$", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def reusable(lock: str, req_digest: str | None, python_id: str) -> bool:
    """Whether `lock` was resolved from exactly these requirements on this Python."""
    if not lock or req_digest is None:
        return False
    h = parse_header(lock)
    return (
        h.get("roost-lock") == HEADER_VERSION
        and h.get("requirements") == req_digest
        and h.get("python") == python_id
    )


def pins(lock: str) -> list[str]:
    """The lock's requirement lines, without comments or blank lines."""
    out = []
    for line in lock.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(line)
    return out


def lock_digest(lock: str) -> str:
    return "sha256:" + hashlib.sha256(lock.encode()).hexdigest()


def layer_key(lock: str, python_id: str) -> str:
    """Names the dependency layer: same pins on the same interpreter, same layer."""
    h = hashlib.sha256(f"roost-layer v1\n{python_id}\n".encode())
    for line in sorted(pins(lock)):
        h.update(line.encode() + b"\n")
    return h.hexdigest()


def check_requirements_file(checkout: Path, requirements: str | None) -> None:
    """A config naming a missing requirements file fails here, with the name."""
    if requirements is None:
        return
    path = checkout / requirements
    if ".." in Path(requirements).parts or Path(requirements).is_absolute():
        raise BuildError(f"requirements file {requirements!r} must be inside the app directory")
    if not path.is_file():
        raise BuildError(
            f"the app configuration names requirements file {requirements!r}, "
            "but the upload does not contain it"
        )
