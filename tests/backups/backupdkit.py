"""A real servicehost and backupd's real pieces around it, for the tests that
back up from one and restore into it (as tests/backups/test_host_restore.py)."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from roost.backups.daemon import Backupd, build
from roost.backups.drill import Drills
from roost.backups.jobs import Repos
from roost.backups.layout import Layout
from roost.backups.locations import local_location
from roost.backups.restic import Repo
from roost.backups.sources import Pullers
from roost.settings import Settings
from tests.servicehost.harness import Servicehost


@contextlib.asynccontextmanager
async def servicehost_and_base(prefix: str) -> AsyncIterator[tuple[Servicehost, Path]]:
    """A started servicehost (PostgreSQL up, backupd's key admitted) and a
    directory for backupd under /tmp, searchable: the drills' scratch
    servers run as roost-backup. Both removed after; the servicehost's log
    printed on failure."""
    sh = Servicehost(backupd=True)
    base = Path(tempfile.mkdtemp(prefix=prefix))
    base.chmod(0o711)
    try:
        sh.start()
        await sh.wait_postgres_up()
        yield sh, base
    except BaseException:
        print(sh.tail())
        raise
    finally:
        sh.cleanup()
        shutil.rmtree(base, ignore_errors=True)


async def backupd_at(layout: Layout, pullers: Pullers) -> Backupd:
    """backupd's parts with a real local restic repository and real drills."""
    layout.create()
    repos = Repos(Repo(local_location(layout), layout))
    await repos.local.init()
    return build(layout, Settings(), pullers, repos, Drills(repos.local, layout))
