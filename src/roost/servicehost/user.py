"""The system user PostgreSQL and Redis run as.

PostgreSQL refuses to run as root, and a database server has no business
holding root anyway: when the servicehost is root it runs both servers as
`settings.services_user` (a system user created on first use) and gives it
their directories; otherwise they run as the servicehost's own user.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from roost.procs import die_with_parent
from roost.sysuser import SystemUserError, ensure_system_user


class ServiceUserError(RuntimeError):
    pass


@dataclass(frozen=True)
class ServiceUser:
    name: str
    uid: int
    gid: int
    dropped: bool  # True when children switch to this user (we are root)

    def chown_tree(self, root: Path) -> None:
        if not self.dropped:
            return
        os.lchown(root, self.uid, self.gid)
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                os.lchown(os.path.join(dirpath, name), self.uid, self.gid)

    def preexec(self) -> Callable[[], None]:
        """For preexec_fn: become this user, then die with the parent.

        (uvloop takes no user=/group= arguments, so the switch happens here;
        PDEATHSIG is set after it because a uid change clears it.)
        """
        uid, gid, dropped = self.uid, self.gid, self.dropped

        def child() -> None:
            if dropped:
                os.setgroups([])
                os.setgid(gid)
                os.setuid(uid)
            die_with_parent()

        return child

    def check_reachable(self, path: Path) -> None:
        """The user must be able to walk down to `path` (o+x on every parent)."""
        if not self.dropped:
            return
        for parent in [path, *path.parents]:
            st = parent.stat()
            if st.st_uid == self.uid:
                continue
            if not st.st_mode & stat.S_IXOTH:
                raise ServiceUserError(
                    f"service user {self.name!r} cannot reach {path}: {parent} is not "
                    "searchable by others (chmod o+x it, or put the data directory elsewhere)"
                )


def ensure_service_user(name: str) -> ServiceUser:
    """The user the servers run as (PostgreSQL refuses to run as root)."""
    try:
        a = ensure_system_user(name)
    except SystemUserError as exc:
        raise ServiceUserError(f"service user: {exc}") from None
    return ServiceUser(name=a.name, uid=a.uid, gid=a.gid, dropped=a.dropped)
