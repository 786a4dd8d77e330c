"""Starting children (roost.proc.spawn) and waiting for them (roost.proc.wait), for real."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from roost.proc.spawn import child_setup, popen, start
from roost.proc.stop import terminate
from roost.proc.wait import wait_group
from tests.nobody import SYSTEM_PYTHON

SLEEP = [sys.executable, "-c", "import time; time.sleep(600)"]


async def test_a_child_has_its_own_session_and_stops_with_its_group() -> None:
    # The child starts a grandchild in its group, then the group is stopped whole.
    code = (
        "import subprocess, sys, time; "
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
        "print('ok', flush=True); time.sleep(600)"
    )
    proc = await start([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    assert await proc.stdout.readline() == b"ok\n"
    assert os.getsid(proc.pid) == proc.pid and os.getpgid(proc.pid) == proc.pid
    grandchild = psutil.Process(proc.pid).children()[0]
    assert os.getpgid(grandchild.pid) == proc.pid
    assert await terminate(proc, 5.0) == -signal.SIGTERM
    grandchild.wait(10)  # killed with the group, reaped by init (it was no child of ours)


def _child_running(arg: str) -> bool:
    for c in psutil.Process().children():
        with contextlib.suppress(psutil.Error):
            if arg in c.cmdline():
                return True
    return False


async def test_a_start_cancelled_leaves_nothing_the_child_already_started(tmp_path: Path) -> None:
    # The child is running, and has started its own, before its pipes are
    # connected: the start is cancelled just then (the loop held meanwhile).
    marker = tmp_path / "pid"
    argv = ["sh", "-c", 'sleep 600 & echo $! > "$0"; wait', str(marker)]
    task = asyncio.create_task(start(argv, env={"PATH": "/usr/bin:/bin"}, stdout=subprocess.PIPE))
    while not _child_running(str(marker)):
        await asyncio.sleep(0)  # until it is forked (its pipes connect a few turns later)
    while not marker.exists() or not marker.read_text():
        time.sleep(0.01)  # blocking: the start must not finish meanwhile
    task.cancel()
    with pytest.raises(asyncio.CancelledError):  # (so it was cancelled while starting)
        await task
    with contextlib.suppress(psutil.NoSuchProcess):  # TimeoutExpired: it was left behind
        psutil.Process(int(marker.read_text())).wait(10)


def test_a_child_dies_with_its_parent_even_when_the_parent_is_killed() -> None:
    # The parent is a separate process that we SIGKILL: it has no chance to stop its child.
    parent_code = textwrap.dedent(f"""
        import sys, time
        from roost.proc.spawn import popen
        p = popen({SLEEP!r}, env={{}}, cwd="/", stdout=None, stderr=None)
        print(p.pid, flush=True)
        time.sleep(600)
    """)
    parent = subprocess.Popen([sys.executable, "-c", parent_code], stdout=subprocess.PIPE)
    try:
        assert parent.stdout is not None
        child = psutil.Process(int(parent.stdout.readline()))
        assert child.is_running()
        parent.kill()
        parent.wait()
        child.wait(10)  # PR_SET_PDEATHSIG: gone as soon as its parent is
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


async def test_the_uid_drop_leaves_no_groups_and_keeps_the_death_signal() -> None:
    nobody = pwd.getpwnam("nobody")
    code = (
        "import os, ctypes; sig = ctypes.c_int(); "
        "ctypes.CDLL(None).prctl(2, ctypes.byref(sig), 0, 0, 0); "  # PR_GET_PDEATHSIG
        "print(os.getuid(), os.getgid(), os.getgroups(), oct(os.umask(0)), sig.value)"
    )
    p = popen(
        [SYSTEM_PYTHON, "-c", code],  # the venv's may sit where nobody cannot reach
        env={},
        cwd="/",
        setup=child_setup(uid=nobody.pw_uid, gid=nobody.pw_gid, umask=0o027),
    )
    assert await wait_group(p) == 0
    assert p.stdout is not None
    assert p.stdout.read().decode().split() == [
        str(nobody.pw_uid), str(nobody.pw_gid), "[]", "0o27", str(int(signal.SIGKILL))
    ]  # fmt: skip
    p.stdout.close()
    assert p.stderr is not None
    p.stderr.close()


async def test_a_child_made_to_outlive_its_owner_has_no_death_signal() -> None:
    code = (
        "import os, ctypes; sig = ctypes.c_int(); "
        "ctypes.CDLL(None).prctl(2, ctypes.byref(sig), 0, 0, 0); "  # PR_GET_PDEATHSIG
        "print(sig.value, os.getsid(0) == os.getpid())"
    )
    p = popen(
        [sys.executable, "-c", code], env={}, cwd="/", setup=child_setup(die_with_parent=False)
    )
    assert await wait_group(p) == 0
    assert p.stdout is not None and p.stderr is not None
    assert p.stdout.read().decode().split() == ["0", "True"]  # its own session all the same
    p.stdout.close()
    p.stderr.close()


async def test_wait_group_kills_what_the_leader_left_behind() -> None:
    # The leader exits at once, leaving a background sleeper in its group.
    code = (
        "import subprocess, sys; "
        "print(subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']).pid)"
    )
    p = popen([sys.executable, "-c", code], env=dict(os.environ), cwd="/", stderr=None)
    assert p.stdout is not None
    left = psutil.Process(int(await asyncio.to_thread(p.stdout.readline)))
    assert await wait_group(p) == 0
    left.wait(10)
    p.stdout.close()
