"""The system user PostgreSQL and Redis run as.

PostgreSQL refuses to run as root, and a database server has no business
holding root anyway: when the servicehost is root it runs both servers as
`settings.services_user` (a system user created on first use) and gives it
their directories; otherwise they run as the servicehost's own user.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from roost.proc.exits import Unavailable
from roost.proc.spawn import ChildSetup, child_setup
from roost.sysuser import SystemUserError, check_reachable, chown_tree, ensure_system_user


class ServiceUserError(Unavailable):
    pass


@dataclass(frozen=True)
class ServiceUser:
    name: str
    uid: int
    gid: int
    dropped: bool  # True when children switch to this user (we are root)

    @property
    def run_uid(self) -> int:
        """The uid the servers run as."""
        return self.uid if self.dropped else os.getuid()

    def chown_tree(self, root: Path) -> None:
        if not self.dropped:
            return
        chown_tree(root, self.uid, self.gid)

    def setup(self) -> ChildSetup:
        """How a child becomes this user (and dies with us): `roost.proc.spawn`."""
        if not self.dropped:
            return child_setup()
        return child_setup(uid=self.uid, gid=self.gid)

    def check_reachable(self, path: Path) -> None:
        """The user must be able to walk down to `path` (raises Unreachable)."""
        if self.dropped:
            check_reachable(self.name, self.uid, path)


def ensure_service_user(name: str) -> ServiceUser:
    """The user the servers run as (PostgreSQL refuses to run as root)."""
    try:
        a = ensure_system_user(name)
    except SystemUserError as exc:
        raise ServiceUserError(f"service user: {exc}") from None
    return ServiceUser(name=a.name, uid=a.uid, gid=a.gid, dropped=a.dropped)
