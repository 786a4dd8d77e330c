"""Named exit statuses of Roost's daemons, and the errors that choose them.

A daemon's exit status tells its supervisor (`roost up`, a router's worker
supervisor, systemd) whether starting it again can help. The values are the
BSD sysexits ones, so other tools read them too:

  OK            it was asked to stop and did;
  UNAVAILABLE   something the host must provide is missing (a program such
                as nft or bubblewrap, a kernel feature, a free port);
  SOFTWARE      an unexpected error, a bug: a restart may well help;
  CONFIG_ERROR  its configuration is wrong (a bad cluster.json or setting, a
                data directory its users cannot reach).

UNAVAILABLE and CONFIG_ERROR are fatal to a supervisor: the same start would
fail the same way, so it stops with the daemon's message rather than
restarting it forever. A daemon raises `ConfigError` or `Unavailable` with
a message naming the fix; `exit_for` turns whatever ended the daemon into
its status and that message.
"""

from __future__ import annotations

import signal
from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    UNAVAILABLE = 69
    SOFTWARE = 70
    CONFIG_ERROR = 78


# Exit statuses a supervisor must not restart a daemon after.
FATAL = frozenset({ExitCode.UNAVAILABLE, ExitCode.CONFIG_ERROR})


class DaemonError(Exception):
    """An error that ends a daemon with `exit_code` and its message (no traceback)."""

    exit_code = ExitCode.SOFTWARE


class ConfigError(DaemonError):
    exit_code = ExitCode.CONFIG_ERROR


class Unavailable(DaemonError):
    exit_code = ExitCode.UNAVAILABLE


def error_for(status: int | None, message: str) -> DaemonError:
    """The error that makes a daemon exit with a child's fatal `status` (a
    supervisor passing on why it stops)."""
    for cls in (ConfigError, Unavailable):
        if status == cls.exit_code:
            return cls(message)
    return DaemonError(message)


def exit_for(exc: BaseException) -> tuple[ExitCode, str]:
    """The status and message a daemon ended by `exc` exits with.

    A `DaemonError` anywhere in an exception group (a TaskGroup wraps what its
    body raised) decides, the most fatal first; anything else is SOFTWARE.
    """
    found = _daemon_errors(exc)
    if found:
        worst = max(found, key=lambda e: e.exit_code == ExitCode.CONFIG_ERROR)
        return worst.exit_code, str(worst)
    return ExitCode.SOFTWARE, f"{type(exc).__name__}: {exc}"


def _daemon_errors(exc: BaseException) -> list[DaemonError]:
    if isinstance(exc, DaemonError):
        return [exc]
    if isinstance(exc, BaseExceptionGroup):
        return [e for sub in exc.exceptions for e in _daemon_errors(sub)]
    return []


def describe(status: int | None) -> str:
    """A child's exit status in words ("exited with status 78 (CONFIG_ERROR)")."""
    if status is None:
        return "did not start"
    if status < 0:
        try:
            return f"killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"killed by signal {-status}"
    try:
        return f"exited with status {status} ({ExitCode(status).name})"
    except ValueError:
        return f"exited with status {status}"
