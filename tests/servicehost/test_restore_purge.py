"""What restores kept goes after ROOST_ARCHIVE_DAYS (a fake clock, no servers):
the kept directories and their records; a younger one, and a copy restored
`--to` (the app's own database, admitted by its record), stay."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

from roost.servicehost.appdata import AppData
from roost.servicehost.binaries import Binaries
from roost.servicehost.host import ServiceHost
from roost.servicehost.layout import Layout
from roost.servicehost.restores import Restores
from roost.servicehost.state import HostState, Restore, load_state
from roost.servicehost.user import ServiceUser
from roost.settings import Settings

DAY = 86400.0


async def test_kept_data_is_purged_after_its_days(tmp_path: Path) -> None:
    me = pwd.getpwuid(os.getuid())
    user = ServiceUser(me.pw_name, me.pw_uid, me.pw_gid, dropped=False)
    layout = Layout(tmp_path)
    layout.create(searchable=False)
    host = ServiceHost(layout, Settings(), Binaries(tmp_path, tmp_path / "redis-server"), user)
    now = 1_000_000_000.0
    old_dir, young_dir = layout.kept("a") / "redis-r1", layout.kept("a") / "data-r2"
    for d in (old_dir, young_dir):
        d.mkdir(parents=True)
        (d / "dump.rdb").write_bytes(b"x")
    done = {"app": "a", "step": "swapped"}
    records = [
        Restore(id="r1", kind="redis", at=now - 8 * DAY, kept=str(old_dir), **done),
        Restore(id="r2", kind="data", at=now - 6 * DAY, kept=str(young_dir), **done),
        Restore(id="c1", kind="postgres", at=now - 30 * DAY, database="app_a__r_c1",
                target="a_copy", **done),
    ]  # fmt: skip
    for r in records:
        host.state.restores[HostState.restore_key(r.kind, r.app, r.id)] = r
    host.save()
    restores = Restores(host, AppData(tmp_path / "appdata"))

    assert await restores.purge(keep_s=7 * DAY, now=now) == [str(old_dir)]
    assert not old_dir.exists() and (young_dir / "dump.rdb").exists()
    on_disk = load_state(layout.state_file).restores
    assert sorted(on_disk) == ["data/a/r2", "postgres/a/c1"]
    assert host.copies() == [("a_copy", "app_a")]  # still admitted by pg_hba
