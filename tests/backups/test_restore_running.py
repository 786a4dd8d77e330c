"""backupd lists an app restore as running from its start until it is over,
whatever its outcome (Restorer.running, what BackupRestoresRunning answers):
a controller resumes the app a restore suspended once it is no longer
listed (roost.controller.restorehold). No sockets: the repository's
restore is a fake held by the test."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from roost.backups.locations import RepoError
from roost.backups.restore import Restorer, RestoreRefused
from roost.wire.messages import BackupRestore


class HeldRepo:
    def __init__(self) -> None:
        self.reached = asyncio.Event()
        self.go_on = asyncio.Event()

    async def restore(self, snapshot: str, into: Path, size: int = 0) -> None:
        self.reached.set()
        await self.go_on.wait()
        raise RepoError("the repository is gone")


def _restorer(tmp_path: Path, repo: HeldRepo) -> Restorer:
    entry = SimpleNamespace(kind="git", app="shop", state="verified", message="", size=1)
    rec = SimpleNamespace(id="b1", entry=entry, snapshots={"local": "s1"}, facts={})
    jobs: Any = SimpleNamespace(
        catalog=SimpleNamespace(get=lambda _id: rec),
        layout=SimpleNamespace(scratch=tmp_path / "scratch"),
        repos=SimpleNamespace(local=repo),
    )
    return Restorer(jobs)


async def test_a_restore_is_listed_while_it_runs_and_not_after(tmp_path: Path) -> None:
    repo = HeldRepo()
    restorer = _restorer(tmp_path, repo)
    task = asyncio.create_task(restorer(BackupRestore(app="shop", backup_id="b1")))
    await asyncio.wait_for(repo.reached.wait(), 10)
    (rid,) = restorer.running
    assert restorer.running == {rid: "shop"}
    repo.go_on.set()
    with pytest.raises(RestoreRefused, match="the repository is gone"):
        await task
    assert restorer.running == {}


async def test_a_refused_restore_is_not_listed_after(tmp_path: Path) -> None:
    restorer = _restorer(tmp_path, HeldRepo())
    with pytest.raises(RestoreRefused):
        await restorer(BackupRestore(app="shop"))  # neither an id nor a time
    assert restorer.running == {}
