"""Packing an app directory into the tar.gz that `roost deploy` uploads.

Version-control metadata, virtualenvs and bytecode never travel; patterns
from `.roostignore` / `.epioignore` (gitignore syntax, as ep.io's client
used them) are honoured here too so ignored files are not even uploaded.
"""

from __future__ import annotations

import fnmatch
import io
import os
import tarfile
from pathlib import Path

ALWAYS_SKIPPED = {
    ".git",
    ".hg",
    ".svn",
    ".epio-git",
    ".roost",
    "__pycache__",
    ".venv",
    ".mypy_cache",
}


def ignore_patterns(root: Path) -> list[str]:
    patterns: list[str] = []
    for name in (".roostignore", ".epioignore"):
        path = root / name
        if path.is_file():
            for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
                line = raw.strip()
                if line and not line.startswith("#"):
                    patterns.append(line)
    return patterns


def ignored(rel: str, is_dir: bool, patterns: list[str]) -> bool:
    name = rel.rsplit("/", 1)[-1]
    for pat in patterns:
        dir_only = pat.endswith("/")
        p = pat.rstrip("/")
        if dir_only and not is_dir:
            continue
        if p.startswith("/"):
            if fnmatch.fnmatchcase(rel, p[1:]):
                return True
        elif "/" in p:
            if fnmatch.fnmatchcase(rel, p):
                return True
        elif fnmatch.fnmatchcase(name, p):
            return True
    return False


def pack(root: Path) -> bytes:
    """A gzip tar of `root`'s contents (paths relative to root)."""
    patterns = ignore_patterns(root)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=6) as tar:
        for dirpath, dirnames, filenames in os.walk(root):
            rel_dir = os.path.relpath(dirpath, root)
            rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/")
            keep = []
            for d in sorted(dirnames):
                rel = f"{rel_dir}/{d}" if rel_dir else d
                if d in ALWAYS_SKIPPED or ignored(rel, True, patterns):
                    continue
                keep.append(d)
            dirnames[:] = keep
            for f in sorted(filenames):
                rel = f"{rel_dir}/{f}" if rel_dir else f
                if f.endswith((".pyc", ".pyo")) or ignored(rel, False, patterns):
                    continue
                tar.add(os.path.join(dirpath, f), arcname=rel, recursive=False)
    return buf.getvalue()
