"""DATA/backupd's directories: private to the daemon, but for the way down
to scratch/ that the scratch servers' user needs."""

from __future__ import annotations

import stat
from pathlib import Path

from roost.backups.layout import Layout


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_create_keeps_the_way_to_scratch_and_nothing_else(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    layout.create()
    assert {mode(d) for d in (layout.root, layout.scratch, layout.keys)} == {0o700}
    # What scratch.make_reachable grants, and what no one may have.
    for d in (layout.root, layout.scratch):
        d.chmod(0o777)
    layout.keys.chmod(0o711)
    # Barman's configuration rewritten while a drill's scratch server starts:
    layout.create()
    assert mode(layout.root) == mode(layout.scratch) == 0o711
    assert mode(layout.keys) == 0o700
