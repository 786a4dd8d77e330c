"""Named exit statuses (roost.proc.exits)."""

from __future__ import annotations

import signal

from roost.proc.exits import FATAL, ConfigError, ExitCode, Unavailable, describe, exit_for


def test_daemon_errors_choose_their_status() -> None:
    assert exit_for(ConfigError("bad cluster.json")) == (ExitCode.CONFIG_ERROR, "bad cluster.json")
    assert exit_for(Unavailable("no nft")) == (ExitCode.UNAVAILABLE, "no nft")
    assert exit_for(RuntimeError("boom")) == (ExitCode.SOFTWARE, "RuntimeError: boom")


def test_an_error_wrapped_by_a_task_group_still_decides() -> None:
    group = BaseExceptionGroup(
        "tasks", [RuntimeError("cancelled meanwhile"), ExceptionGroup("inner", [Unavailable("x")])]
    )
    assert exit_for(group) == (ExitCode.UNAVAILABLE, "x")
    both = ExceptionGroup("tasks", [Unavailable("x"), ConfigError("y")])
    assert exit_for(both) == (ExitCode.CONFIG_ERROR, "y")


def test_fatal_statuses_and_their_names() -> None:
    assert ExitCode.CONFIG_ERROR in FATAL and ExitCode.UNAVAILABLE in FATAL
    assert ExitCode.SOFTWARE not in FATAL and ExitCode.OK not in FATAL
    assert describe(78) == "exited with status 78 (CONFIG_ERROR)"
    assert describe(3) == "exited with status 3"
    assert describe(-signal.SIGKILL) == "killed by SIGKILL"
    assert describe(None) == "did not start"
