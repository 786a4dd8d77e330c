"""`.roostignore` / `.epioignore`: gitignore-style patterns of files not to ship."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pathspec

IGNORE_FILES = (".roostignore", ".epioignore")


def load_patterns(checkout: Path) -> list[str]:
    lines: list[str] = []
    for name in IGNORE_FILES:
        path = checkout / name
        if path.is_file() and not path.is_symlink():
            lines += path.read_text(encoding="utf-8", errors="replace").splitlines()
    return lines


def ignored_paths(paths: list[str], patterns: list[str]) -> list[str]:
    """Which of `paths` (relative, '/'-separated; dirs end with '/') the patterns drop."""
    if not patterns:
        return []
    spec = pathspec.GitIgnoreSpec.from_lines(patterns)
    return [p for p in paths if spec.match_file(p)]


def apply_ignores(checkout: Path) -> list[str]:
    """Delete ignored files and directories from the checkout; returns what went."""
    patterns = load_patterns(checkout)
    if not patterns:
        return []
    spec = pathspec.GitIgnoreSpec.from_lines(patterns)
    removed: list[str] = []
    for dirpath, dirnames, filenames in os.walk(checkout):
        rel_dir = os.path.relpath(dirpath, checkout)
        prefix = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
        keep_dirs = []
        for d in dirnames:
            full = os.path.join(dirpath, d)
            if spec.match_file(prefix + d + "/"):
                if os.path.islink(full):
                    os.unlink(full)
                else:
                    shutil.rmtree(full)
                removed.append(prefix + d + "/")
            else:
                keep_dirs.append(d)
        dirnames[:] = keep_dirs
        for f in filenames:
            if spec.match_file(prefix + f):
                os.unlink(os.path.join(dirpath, f))
                removed.append(prefix + f)
    return removed
