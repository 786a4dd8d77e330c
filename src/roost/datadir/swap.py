"""A restore of an app's live data directory, in place.

The tree is bound into the app's running sandboxes (and may be a file
system of its own: roost.datadir.quota), so a restore cannot rename a new
directory over it: running instances would go on in the old one, and a
mount point does not move. Instead its files are replaced where they are:

  1. the old files are copied to `kept` (by root, links copied as links),
     unless an earlier try of this restore did (then the tree holds that
     try's files and `kept` the original ones);
  2. as the app's own user: the tree is emptied and the restored files
     (staging, given to that user first) copied in.

Step 2 runs as the app's user because the app runs meanwhile: a directory
it swapped for a link mid-copy could make root write where the link
points; the app's own uid can only write where the app could anyway.
Running instances see the restored files at once.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from roost.sysuser import chown_tree

TIMEOUT_S = 3600.0


class SwapError(RuntimeError):
    pass


def _run(argv: list[str], owner: tuple[int, int] | None = None, cwd: Path | None = None) -> None:
    """`argv`, as `owner` when given (root's chdir to `cwd` comes first, so the
    app's user need not walk down to it: DATA may be closed to it)."""
    drop = owner is not None and os.geteuid() == 0
    try:
        r = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            cwd=cwd,
            user=owner[0] if drop and owner else None,
            group=owner[1] if drop and owner else None,
            extra_groups=[] if drop else None,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SwapError(f"{argv[0]}: {exc}") from None
    if r.returncode != 0:
        raise SwapError(f"{' '.join(argv[:2])}: {r.stderr.strip()}")


def replace_contents(
    live: Path, staging: Path, kept: Path, unclaimed: tuple[int, int] | None = None
) -> None:
    """Make `live`'s files `staging`'s, keeping the old ones in `kept`. The
    files go to the tree's owner; a tree root owns (new, nobody's yet) is
    given to `unclaimed` first (the servicehost's tools user)."""
    if not kept.exists():
        kept.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        partial = kept.with_name(f"{kept.name}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(mode=0o700)
        if live.is_dir():
            _run(["cp", "-a", "--no-dereference", "--", f"{live}/.", str(partial)])
        os.rename(partial, kept)
    if not live.is_dir():
        live.mkdir(mode=0o700)
    st = live.stat()
    if st.st_uid == 0 and unclaimed is not None:
        os.lchown(live, *unclaimed)
        st = live.stat()
    owner = (st.st_uid, st.st_gid)
    # The restored files become the app's before it copies them in.
    chown_tree(staging, *owner)
    os.chmod(staging, 0o700)
    if staging.parent != live.parent:
        raise SwapError(f"{staging} must lie beside {live}")
    # From inside the tree: find reopens its working directory, which must
    # be readable to the app's user (the directory of all trees is not).
    _run(["find", ".", "-mindepth", "1", "-delete"], owner, live)
    _run(["cp", "-a", "--no-dereference", "--", f"../{staging.name}/.", "."], owner, live)


def carry_over(old: Path, live: Path, owner: tuple[int, int]) -> bool:
    """Files an app wrote into a runner's pulled copy (`old`, before the
    live tree) join its live tree, never replacing one there; `old` is then
    set aside as `<old>.pre-live`. As the app's user: from inside `old`
    (root's chdir first), to the live tree by a descriptor root opened, so
    the user needs no way through DATA. True when something was carried."""
    if not old.is_dir() or old.is_symlink() or not any(old.iterdir()):
        return False
    fd = os.open(live, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        names = [f"./{n}" for n in sorted(os.listdir(old))]
        drop = os.geteuid() == 0
        r = subprocess.run(
            ["cp", "-a", "--no-dereference", "-n", "--", *names, f"/proc/self/fd/{fd}/"],
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            cwd=old,
            pass_fds=(fd,),
            user=owner[0] if drop else None,
            group=owner[1] if drop else None,
            extra_groups=[] if drop else None,
        )
    finally:
        os.close(fd)
    if r.returncode != 0:
        raise SwapError(f"cp into the live tree: {r.stderr.strip()}")
    os.rename(old, old.with_name(f"{old.name}.pre-live"))
    return True
