"""The release before this one, as CHANGELOG.md names it: its version and the
git revision to read its files from (the tag `vX.Y.Z`, or the commit the
changelog names while the tag is not made yet).

The compatibility tests (wire messages, migrations) compare this tree with
that release's: neighbouring releases run together during a rolling upgrade.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import NamedTuple

import roost

ROOT = Path(__file__).resolve().parent.parent
CHANGELOG = ROOT / "CHANGELOG.md"

# "## [0.1.0] - 2026-12-06": a released version; "## [Unreleased]" is not.
_RELEASED = re.compile(r"^## \[(\d+\.\d+\.\d+)\] - \d{4}-\d{2}-\d{2}$", re.M)
# "tagged `v0.1.0` at commit `b61d679`", in that version's section.
_COMMIT = re.compile(r"tagged\s+`v(\d+\.\d+\.\d+)`\s+at\s+commit\s+`([0-9a-f]{7,40})`")


class Release(NamedTuple):
    version: str
    commit: str  # as the changelog names it
    rev: str  # what git reads: the tag when it exists, else the commit


def released_versions(text: str) -> list[str]:
    """Released versions in the changelog's order (newest first)."""
    return _RELEASED.findall(text)


def git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), *args], check=True, capture_output=True, text=True
    ).stdout


def previous_release(text: str | None = None) -> Release:
    text = CHANGELOG.read_text() if text is None else text
    # At a release's own commit its section is already written (and cannot
    # name its own commit): the release before this one is the newest other.
    versions = [v for v in released_versions(text) if v != roost.__version__]
    assert versions, "CHANGELOG.md names no released version"
    commits = dict(_COMMIT.findall(text))
    version = versions[0]
    assert version in commits, f"CHANGELOG.md does not say which commit v{version} is"
    commit = git("rev-parse", "--verify", f"{commits[version]}^{{commit}}").strip()
    tagged = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--verify", "-q", f"v{version}^{{commit}}"],
        capture_output=True,
        text=True,
    )
    if tagged.returncode == 0:
        # Once tagged, the tag and the changelog must agree.
        assert tagged.stdout.strip() == commit, f"tag v{version} is not the changelog's commit"
        return Release(version, commit, f"v{version}")
    return Release(version, commit, commit)


def file_at(rev: str, path: str) -> str:
    return git("show", f"{rev}:{path}")


def files_at(rev: str, folder: str) -> list[str]:
    return git("ls-tree", "--name-only", f"{rev}:{folder}").split()
