"""Where the local platform keeps its data, and whether its users can reach it.

As root, the builder and the servicehost drop to their own users
(`roost-build`, `roost-services`, and each app's build user), who must walk
down to DATA/builder and DATA/servicehost: every directory above DATA must be
searchable by others. A checkout under root's home (/root is 0700 on a new
server) is not, so root's default is /var/lib/roost, as Dokku keeps its
state in /var/lib/dokku and PostgreSQL in /var/lib/postgresql. Anyone else
runs the platform as themselves, nothing is dropped, and ./.roost is fine.
`$ROOST_DATA` or `--data` choose any other place; `roost up` refuses one its
users cannot reach before it starts anything, saying what to do.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Mapping
from pathlib import Path

SYSTEM_DATA = Path("/var/lib/roost")
USER_DATA = Path(".roost")


def default_data_dir(euid: int, env: Mapping[str, str]) -> Path:
    """$ROOST_DATA; else /var/lib/roost for root, ./.roost for anyone else."""
    chosen = env.get("ROOST_DATA", "")
    if chosen:
        return Path(chosen)
    return SYSTEM_DATA if euid == 0 else USER_DATA


def closed_parent(path: Path, mode_of: Callable[[Path], int | None]) -> Path | None:
    """The topmost directory above `path` that other users cannot pass through
    (no o+x), or None when they can reach it (`path` itself is made 0711).

    `mode_of` gives a directory's st_mode, None when it does not exist (it
    will be made, searchable): absolute paths only.
    """
    for d in reversed(path.parents):
        mode = mode_of(d)
        if mode is not None and not mode & stat.S_IXOTH:
            return d
    return None


def existing_mode(path: Path) -> int | None:
    try:
        return path.stat().st_mode
    except FileNotFoundError:
        return None


def unreachable_message(data: Path, closed: Path, mode: int) -> str:
    return (
        f"the build and service users cannot reach the data directory {data}: "
        f"{closed} is {stat.S_IMODE(mode):04o}, not searchable by others. "
        f"Put it where they can reach it (roost up --data {SYSTEM_DATA}, the default "
        f"for root), or open the way: chmod o+x {closed}"
    )


def check_reachable(data: Path) -> str | None:
    """Why the users the daemons drop to cannot reach `data`; None when they can
    (or when nothing is dropped: not root)."""
    if os.geteuid() != 0:
        return None
    closed = closed_parent(data, existing_mode)
    if closed is None:
        return None
    return unreachable_message(data, closed, closed.stat().st_mode)


def make_parents(data: Path) -> None:
    """Make the directories above `data` as `mkdir -p` would (0755 whatever the
    umask): the daemons' private umask would make them 0700, closing the way."""
    for d in reversed(data.parents):
        if not d.exists():
            d.mkdir()
            d.chmod(0o755)


def older_local_dir(cwd: Path, chosen: Path) -> Path | None:
    """./.roost with a platform in it, when root's default now points elsewhere
    and holds none: the data of a `roost up` from before /var/lib/roost."""
    old = cwd / USER_DATA
    if chosen.resolve() == old.resolve() or (chosen / "cluster.json").exists():
        return None
    return old if (old / "cluster.json").exists() else None
