"""A directory on a tmpfs of its own, for tests whose data is hundreds of MB
of PostgreSQL clusters, base backups and repositories.

Why. On a disk other processes keep busy, every fsync (PostgreSQL's,
pg_basebackup's, Barman's of each backup file, restic's) and every unlink
waits behind their writes in the journal: a platform's capture of itself
took 17 s instead of 7, and deleting its data directory afterwards 15 s
instead of 0.1 (the mount goes at once). Nothing the tests prove depends on
the filesystem: Roost's own checks of free space see the tmpfs's size,
which is well above what they keep free.

The mount is the test's: made in a fresh directory under the system temp
dir (world-searchable, as the build and service users walk down to a data
directory), unmounted and removed when the block ends. Without root (a
developer's run) it is that plain directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

SIZE = "8g"  # an upper bound: a tmpfs holds in memory only what is written to it


@contextlib.contextmanager
def tmpfs_dir(prefix: str) -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix=prefix))
    mounted = False
    try:
        if os.geteuid() == 0:
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={SIZE},mode=755", "roost-test", str(base)],
                check=True,
                capture_output=True,
            )
            mounted = True
        else:
            base.chmod(0o755)
        yield base
    finally:
        if mounted and subprocess.run(["umount", str(base)], capture_output=True).returncode:
            # Busy: a process the test left (which its own checks report) still
            # holds it; detach it now, the kernel frees it when that process goes.
            subprocess.run(["umount", "--lazy", str(base)], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
