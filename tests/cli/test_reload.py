"""`roost up`'s restart (roost.cli.reload) and its control from another shell
(roost.cli.control, roost.cli.local.running_up): the decisions as data, the
walk over a real supervisor of real processes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from roost.cli.client import CliError
from roost.cli.control import reload_up
from roost.cli.local import AlreadyRunning, lock_data_dir, running_up
from roost.cli.reload import Reloads, Step, plan
from roost.proc import upstate
from roost.proc.backoff import Backoff
from roost.proc.children import Policy
from roost.proc.spawn import start
from roost.proc.supervise import Process, Program, Supervisor

ROLES = ["controller", "builder", "runner", "router", "gateway", "servicehost", "backupd"]


def test_each_role_is_replaced_in_start_order_with_its_signal() -> None:
    usr2, term = signal.SIGUSR2, signal.SIGTERM
    assert plan(ROLES, shared_sockets=True) == [
        Step("controller", term),
        Step("builder", term),
        Step("runner", usr2),  # hands its instances over
        Step("router", usr2, overlap=True),  # the sockets are shared: no gap
        Step("gateway", term),
        Step("servicehost", usr2),  # hands PostgreSQL and Redis over
        Step("backupd", term),
    ]
    # Without shared sockets the new router must wait for the port.
    assert Step("router", term) in plan(ROLES, shared_sockets=False)
    assert plan(["controller", "router"], shared_sockets=False) == [
        Step("controller", term),
        Step("router", term),
    ]


def status(reload: upstate.ReloadStatus | None, over: bool = False) -> upstate.UpStatus:
    return upstate.UpStatus(pid=1, roles={}, reload=reload, over=over)


def test_a_reload_waiter_waits_for_the_reload_that_began_after_it_asked() -> None:
    asked = 100.0
    earlier = upstate.ReloadStatus(started_at=99.0, finished_at=101.0)
    assert upstate.reload_verdict(status(None), asked, True) == "wait"
    # One that began before the signal (still running, or done) is not ours.
    assert upstate.reload_verdict(status(earlier), asked, True) == "wait"
    running = upstate.ReloadStatus(started_at=100.5)
    assert upstate.reload_verdict(status(running), asked, True) == "wait"
    done = upstate.ReloadStatus(started_at=100.5, finished_at=104.0, replaced={"router": [1, 2]})
    assert upstate.reload_verdict(status(done), asked, True) == "ready"
    failed = upstate.ReloadStatus(started_at=100.5, finished_at=104.0, error="runner ...")
    assert upstate.reload_verdict(status(failed), asked, True) == "failed"
    # roost up stopping, or gone, ends the wait.
    assert upstate.reload_verdict(status(running, over=True), asked, True) == "failed"
    assert upstate.reload_verdict(status(running), asked, False) == "failed"


def test_the_running_up_is_the_lock_holder_and_a_second_one_is_told_about_reload(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    assert running_up(data) is None  # never ran
    lock = lock_data_dir(data)
    try:
        assert running_up(data) == os.getpid()
        with pytest.raises(AlreadyRunning, match="up --reload"):
            lock_data_dir(data)
    finally:
        lock.close()
    assert running_up(data) is None  # the pid is still in the file; the lock decides
    assert (data / "up.lock").read_text().strip().isdigit()


FAST = Policy(backoff=Backoff(base_s=0.01, max_s=0.05), stop_grace_s=5.0)


def daemon(name: str, notes: Path) -> Program:
    """Notes its start and the signal it was told to go with, then goes."""
    code = (
        "import os, signal, sys, time\n"
        "def bye(n, _):\n"
        f"    open({str(notes)!r}, 'a').write(f'{name} {{signal.Signals(n).name}}\\n')\n"
        "    sys.exit(0)\n"
        "for s in (signal.SIGTERM, signal.SIGUSR2): signal.signal(s, bye)\n"
        f"open({str(notes)!r}, 'a').write(f'{name} start {{os.getpid()}}\\n')\n"
        "time.sleep(600)\n"
    )

    async def go() -> Process:
        return await start([sys.executable, "-c", code])

    async def ready(proc: Process) -> None:
        while f"{name} start {proc.pid}" not in (notes.read_text() if notes.exists() else ""):
            await asyncio.sleep(0.01)

    return Program(name, go, ready=ready, policy=FAST)


async def test_a_reload_replaces_each_role_before_the_next_and_reports_the_pids(
    tmp_path: Path,
) -> None:
    notes = tmp_path / "notes"
    roles = ["controller", "runner", "gateway"]
    said: list[str] = []
    reloads = Reloads()
    sup = Supervisor(in_order=True)
    async with asyncio.TaskGroup() as tg:
        tg.create_task(sup.run())
        for role in roles:
            sup.add(daemon(role, notes))
        for role in roles:
            assert await sup.wait_up(role, 10)
        before = {role: sup.pid(role) for role in roles}
        walk = tg.create_task(reloads.run(sup, plan(roles, False), lambda _: 10.0, said.append))
        reloads.ask()
        async with asyncio.timeout(60):
            while reloads.status is None or not reloads.status.finished_at:
                await asyncio.sleep(0.05)
        done = reloads.status
        assert done.error == ""
        assert done.replaced == {role: [before[role], sup.pid(role)] for role in roles}
        assert all(sup.pid(role) not in (0, before[role]) for role in roles)
        lines = notes.read_text().splitlines()[len(roles) :]
        # One at a time, in order: told to go, the successor up, then the next.
        assert [" ".join(line.split()[:2]) for line in lines] == [
            "controller SIGTERM",
            "controller start",
            "runner SIGUSR2",
            "runner start",
            "gateway SIGTERM",
            "gateway start",
        ]
        assert all(sup.children[role].restarts == 0 for role in roles)
        assert said[-1].startswith("reloaded in")
        walk.cancel()
        sup.stop()


def test_a_reload_asked_of_a_roost_up_that_dies_of_the_signal_fails_at_once(
    tmp_path: Path,
) -> None:
    """A release whose `roost up` knows no SIGHUP dies of it; left unreaped
    (a zombie, which answers kill(pid, 0)), it must still count as gone."""
    data = tmp_path / "data"
    code = (
        "import os, sys, time\n"
        "from pathlib import Path\n"
        "from roost.proc import upstate\n"
        "from roost.cli.local import lock_data_dir\n"
        "data = Path(sys.argv[1])\n"
        "lock = lock_data_dir(data)\n"
        "upstate.save(data, upstate.UpStatus(pid=os.getpid(), roles={}, ready=True))\n"
        "print('ready', flush=True)\n"
        "time.sleep(600)\n"
    )
    older = subprocess.Popen(
        [sys.executable, "-c", code, str(data)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert older.stdout is not None and older.stdout.readline() == "ready\n"
        with pytest.raises(CliError, match="reload failed: roost up stopped"):
            reload_up(data, timeout=60, say=lambda _: None)
        assert older.returncode is None  # not reaped: a zombie all along
    finally:
        older.kill()
        older.wait()
