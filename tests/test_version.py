"""Roost's version is written in two places and the changelog: they agree."""

from __future__ import annotations

import re
import tomllib

import roost
from tests.previous_release import CHANGELOG, ROOT, git, previous_release, released_versions


def test_package_and_pyproject_agree_and_the_changelog_says_it() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["version"] == roost.__version__
    text = CHANGELOG.read_text()
    assert f"Version {roost.__version__}." in text or f"## [{roost.__version__}]" in text


def test_this_version_is_newer_than_every_released_one() -> None:
    def key(v: str) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", v.split(".dev")[0])[:3])

    released = released_versions(CHANGELOG.read_text())
    assert released == sorted(released, key=key, reverse=True)
    mine = roost.__version__
    # 0.3.0.dev0 comes after 0.2.0; once released it becomes ## [0.3.0].
    assert key(mine) > key(released[0]) or f"## [{mine}]" in CHANGELOG.read_text()


def test_the_previous_release_is_a_commit_this_tree_descends_from() -> None:
    prev = previous_release()
    others = [v for v in released_versions(CHANGELOG.read_text()) if v != roost.__version__]
    assert prev.version == others[0]
    git("merge-base", "--is-ancestor", prev.commit, "HEAD")  # raises if not
