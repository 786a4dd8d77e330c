"""What a backupd that was killed left in staging/ and scratch/, cleared
when the next one starts.

Every backup, drill and restore removes its own directory on the way out,
but a backupd that is SIGKILLed (or loses its host's power) has no way out:
a dump half pulled, a recovered cluster (a whole PGDATA: as big as the
source) stay on the disk until someone notices. Nothing of a backupd's work
outlives its process (its scratch servers die with it: PR_SET_PDEATHSIG),
so what a new one finds there at its start is garbage.

Only what backupd itself makes goes, recognised by its name (`leftovers`,
pure): staging/<backup id>/ (jobs.py); scratch/<backup id>/ (a drill),
scratch/restore-<restore id>/ and pitr-<restore id>/ (restore.py), and the
private directories of scratch servers and recoveries, scratch/pg-, redis-,
pitr- and drill-XXXXXXXX/ (scratch.scratch_dir). Anything else is left
alone: staging/restore/ is `roost restore --from`'s, and a file an operator
put there is theirs.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Iterable
from pathlib import Path

from roost.backups.catalog import ID_RE
from roost.backups.layout import Layout

log = logging.getLogger("roost.backups")

# restore.py's directories (restore_id(): 12 hex digits) and scratch_dir()'s
# (tempfile.mkdtemp: a prefix and 8 characters of [a-z0-9_]).
SCRATCH_RE = re.compile(r"^(?:(?:restore|pitr)-[0-9a-f]{12}|(?:pg|redis|pitr|drill)-[a-z0-9_]{8})$")


def leftovers(staging: Iterable[str], scratch: Iterable[str]) -> tuple[list[str], list[str]]:
    """(in staging, in scratch): the names backupd itself made there."""
    return (
        sorted(n for n in staging if ID_RE.match(n)),
        sorted(n for n in scratch if ID_RE.match(n) or SCRATCH_RE.match(n)),
    )


def clear_leftovers(layout: Layout) -> list[Path]:
    """Remove what `leftovers` names (at the start, before any job runs);
    the paths removed."""
    names = [_entries(layout.staging), _entries(layout.scratch)]
    gone: list[Path] = []
    for root, found in zip((layout.staging, layout.scratch), leftovers(*names), strict=True):
        for name in found:
            path = root / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
                gone.append(path)
    if gone:
        log.info("removed what a killed backupd left: %s", ", ".join(str(p) for p in gone))
    return gone


def _entries(root: Path) -> list[str]:
    try:
        return [p.name for p in root.iterdir()]
    except FileNotFoundError:
        return []
