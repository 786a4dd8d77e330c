"""A fresh SQLite state database at the newest schema, without running the
migrations again for every test.

`migrate()` takes ~0.15 s of CPU on SQLite (Alembic loads and runs all its
revisions) and hundreds of tests start from an empty database, so each test
process migrates one template database once, through the real `migrate()`,
and every test gets a byte copy of it: the same file `migrate()` would have
written (the migrations are deterministic: no random or time-dependent
values). Tests about migrating itself (tests/state/, the downgrade tests)
call `migrate()`, not this.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

from roost.state.db import migrate, sqlite_url

_template: Path | None = None
_template_pid = 0


def _migrated_template() -> Path:
    """This process's template, migrated on first use (a forked child makes its own)."""
    global _template, _template_pid
    if _template is None or _template_pid != os.getpid() or not _template.exists():
        where = Path(tempfile.mkdtemp(prefix="roost-state-template-"))
        atexit.register(shutil.rmtree, where, ignore_errors=True)
        template = where / "state.db"
        migrate(sqlite_url(template))
        # A journal or WAL file beside it would mean the copy misses writes.
        leftovers = sorted(p.name for p in where.iterdir() if p != template)
        assert not leftovers, f"migrate() left {leftovers} beside the template"
        _template, _template_pid = template, os.getpid()
    return _template


def migrated_sqlite(path: Path) -> str:
    """Make `path` an empty state database at the newest schema; its URL."""
    if path.exists():
        raise FileExistsError(f"{path} exists: a migrated copy would replace it")
    shutil.copyfile(_migrated_template(), path)
    return sqlite_url(path)
