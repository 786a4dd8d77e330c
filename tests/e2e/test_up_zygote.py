"""`roost up`'s roles outlive the zygote they were forked from (issue 21).

Through a real `roost up`: once every role is up, the zygote is gone (it
held ~16 MB no role shared any more) and every forked role is `roost up`'s
own child. A role killed then is restarted from a new zygote, which retires
in turn once the platform is ready again, and so does a reload's.
"""

from __future__ import annotations

import os
import signal

import psutil
import pytest

from roost.proc import upstate
from tests.conftest import wait_until
from tests.e2e.platform import Platform, running_platform

pytestmark = pytest.mark.e2e


def _zygotes(p: Platform, up: psutil.Process) -> list[psutil.Process]:
    """The zygotes among `roost up`'s children: a forked role has the
    zygote's command line too, so a role's pid is not one."""
    loaded = upstate.load(p.data)
    roles = {r.pid for r in loaded[0].roles.values()} if loaded is not None else set()
    out = []
    for child in up.children():
        try:
            if "roost.cli.zygote" in child.cmdline() and child.pid not in roles:
                out.append(child)
        except psutil.NoSuchProcess:
            continue
    return out


def _role_pid(p: Platform, role: str) -> int:
    loaded = upstate.load(p.data)
    assert loaded is not None
    return loaded[0].roles[role].pid or 0


def _ready(p: Platform) -> bool:
    loaded = upstate.load(p.data)
    return loaded is not None and loaded[0].ready


def test_the_roles_are_roost_ups_own_and_outlive_their_zygote() -> None:
    with running_platform() as p:
        assert p.proc is not None
        up = psutil.Process(p.proc.pid)
        wait_until(lambda: not _zygotes(p, up), 10, "the zygote to retire once every role is up")
        for role in ("controller", "router", "gateway", "backupd"):
            assert psutil.Process(_role_pid(p, role)).ppid() == up.pid, role
        router = _role_pid(p, "router")
        os.kill(router, signal.SIGKILL)
        wait_until(
            lambda: _role_pid(p, "router") not in (0, router) and _ready(p),
            90,
            "the router restarted and the platform ready again",
        )
        again = psutil.Process(_role_pid(p, "router"))
        assert again.ppid() == up.pid
        wait_until(lambda: not _zygotes(p, up), 30, "the restart's zygote to retire")
        # A reload forks every role from a zygote of its own, retired at its end.
        p.roost("up", "--reload")
        wait_until(lambda: not _zygotes(p, up), 10, "the reload's zygote to retire")
        for role in ("controller", "router", "gateway", "backupd"):
            assert psutil.Process(_role_pid(p, role)).ppid() == up.pid, role
        assert p.get("nosuchapp").status_code in (404, 502, 503)
