"""Controlling a running `roost up` from another shell: `roost down` (a full
stop) and `roost up --reload` (a restart of Roost's daemons, apps untouched).

The `roost up` of a data directory is the process holding DATA/up.lock
(`roost.cli.local.running_up`). A stop is its TERM, as Ctrl-C is: every
role stops, then everything left below it, and the lock is let go. A reload
is its SIGHUP (`roost.cli.reload`); DATA/up.json then says how the reload
asked for goes (`roost.proc.upstate.reload_verdict`).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import click

from roost.cli.client import EXIT_ERROR, EXIT_NOT_FOUND, CliError
from roost.cli.local import running_up
from roost.cli.takeover import older_up
from roost.proc import upstate

# A full stop takes each role's grace period at worst, one role after another.
STOP_TIMEOUT_S = 180.0
# A reload waits for each role's readiness in turn (a servicehost's can be slow).
RELOAD_TIMEOUT_S = 600.0
POLL_S = 0.2


def _the_up(data: Path) -> int:
    pid = running_up(data)
    if pid is None:
        raise CliError(f"no roost up is running on {data}", EXIT_NOT_FOUND)
    return pid


def _lives(data: Path, pid: int) -> bool:
    """`roost up` `pid` still runs: it holds DATA's lock (a process that has
    exited lets go of it at once, even while it waits to be reaped as a
    zombie, which answers signals as if it lived)."""
    return upstate.alive(pid) and running_up(data) == pid


def stop_up(
    data: Path, timeout: float = STOP_TIMEOUT_S, say: Callable[[str], None] = click.echo
) -> None:
    """TERM the `roost up` of `data` and return once it has let go of the directory."""
    pid = _the_up(data)
    say(f"stopping roost up (pid {pid}) on {data}")
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return  # it ended meanwhile
    deadline = time.monotonic() + timeout
    while running_up(data) is not None:
        if time.monotonic() >= deadline:
            raise CliError(f"roost up (pid {pid}) is still stopping after {timeout:g}s")
        time.sleep(POLL_S)
    say("stopped")


def reload_up(
    data: Path, timeout: float = RELOAD_TIMEOUT_S, say: Callable[[str], None] = click.echo
) -> upstate.ReloadStatus:
    """SIGHUP the `roost up` of `data`, wait for the reload that follows and
    return how it went; CliError when it failed or `roost up` stopped."""
    pid = _the_up(data)
    found = older_up(data, pid)
    if found is not None and found[1] == "restart":
        # Its SIGHUP would end it and its apps with it.
        raise CliError(
            f"roost up (pid {pid}) on {data} is of a release that knows no reload: start this "
            f"release's roost up on the same data directory instead (roost --data {data} up), "
            f"which takes over from it while the apps keep serving",
            EXIT_ERROR,
        )
    say(f"reloading roost up (pid {pid}) on {data}: every daemon, one at a time")
    asked_at = time.time()
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while True:
        loaded = upstate.load(data)
        if loaded is not None and loaded[0].pid == pid:
            status = loaded[0]
            decided = upstate.reload_verdict(status, asked_at, _lives(data, pid))
            if decided != "wait":
                break
        elif not _lives(data, pid):
            raise CliError(f"roost up (pid {pid}) stopped before the reload", EXIT_ERROR)
        if time.monotonic() >= deadline:
            raise CliError(f"the reload did not end within {timeout:g}s (see roost status)")
        time.sleep(POLL_S)
    done = status.reload
    for role, (old, new) in (done.replaced if done is not None else {}).items():
        say(f"  {role}: pid {old} -> {new}")
    if decided == "failed":
        why = done.error if done is not None and done.error else "roost up stopped"
        raise CliError(f"reload failed: {why}", EXIT_ERROR)
    assert done is not None
    say(f"reloaded in {done.finished_at - done.started_at:.1f}s")
    return done


@click.command("down")
@click.option(
    "--timeout", type=float, default=STOP_TIMEOUT_S, show_default=True, help="longest wait"
)
@click.pass_context
def down(ctx: click.Context, timeout: float) -> None:
    """Stop the `roost up` of the data directory: every role and every app, as Ctrl-C does."""
    stop_up(Path(ctx.obj["data"]).resolve(), timeout)
