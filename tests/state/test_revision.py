"""The schema revisions a controller reads without Alembic (roost.state.revision)
agree with Alembic's own reading, and the migration in a child process
(roost.state.migrator) reaches the head and reports a failure (issue 21)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from roost.state.db import alembic_config, make_engine, sqlite_url
from roost.state.migrator import URL_ENV
from roost.state.revision import current_revision, head_revision


def test_the_head_is_alembics() -> None:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    assert head_revision() == script.get_current_head()


def _migration(path: Path, rev: str, down: str | None) -> None:
    path.write_text(f'"""x"""\nrevision = {rev!r}\ndown_revision = {down!r}\n')


def test_two_heads_or_a_computed_revision_are_refused(tmp_path: Path) -> None:
    _migration(tmp_path / "a.py", "a", None)
    _migration(tmp_path / "b.py", "b", "a")
    assert head_revision(tmp_path) == "b"
    _migration(tmp_path / "c.py", "c", "a")
    with pytest.raises(ValueError, match=r"2 heads: \['b', 'c'\]"):
        head_revision(tmp_path)
    (tmp_path / "c.py").write_text('revision = "c" + "d"\ndown_revision = "b"\n')
    assert head_revision(tmp_path) == "b"  # not a literal: not a migration it can read
    (tmp_path / "d.py").write_text('revision = 4\ndown_revision = "b"\n')
    with pytest.raises(ValueError, match=r"d\.py: revision is not a string"):
        head_revision(tmp_path)


def _migrate(url: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, **{URL_ENV: url})
    return subprocess.run(
        [sys.executable, "-m", "roost.state.migrator"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_child_migrates_to_the_head(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "state.db")
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            assert current_revision(conn) == ""
        done = _migrate(url)
        assert done.returncode == 0, done.stderr
        with engine.connect() as conn:
            assert current_revision(conn) == head_revision()
    finally:
        engine.dispose()


def test_a_failed_migration_says_why_on_its_last_line(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "missing" / "state.db")  # its directory does not exist
    done = _migrate(url)
    assert done.returncode == 1
    assert "OperationalError" in done.stderr.strip().splitlines()[-1]
    assert _migrate("").returncode != 0  # no URL: usage, nothing done
