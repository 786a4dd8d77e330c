"""What every daemon's `run()` shares: logging, the event loop, stop signals,
named exit statuses (`roost.proc.exits`), and private files.

Signals only set an event (gunicorn's arbiter style); the daemon's main task
notices it and shuts its own pieces down in order.

Private files: a daemon runs with umask 077 (`private_umask`), so whatever it
creates without naming a mode (the SQLite database and its -wal/-shm, which
SQLite creates with the database file's mode, cluster.json, logs) is its
own. The few paths another user must reach (the builder's build user, the
servicehost's service user) get explicit modes where they are made. A data
directory made by an older version is tightened at start
(`tighten_data_dir`): bits are only ever removed, so running it twice, or on
a directory already right, changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import stat
import sys
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

from roost.proc.exits import ExitCode, exit_for

PRIVATE_UMASK = 0o077

# DATA-relative path (a glob) -> the permission bits it may keep. DATA itself
# stays searchable (the build and service users walk through it to their own
# directories) but not listable; everything else here holds a secret: CURVE
# secret keys (and the key list), the admin token, the state database's URL
# with its password, the state database itself.
PRIVATE_PATHS: tuple[tuple[str, int], ...] = (
    (".", 0o711),
    ("keys", 0o700),
    ("keys/*", 0o600),
    ("api.json", 0o600),
    ("cluster.json", 0o600),
    ("state.db", 0o600),
    ("state.db-wal", 0o600),
    ("state.db-shm", 0o600),
    ("state.db-journal", 0o600),
    ("gateway", 0o700),  # the SSH host key
    ("router", 0o700),  # the default TLS key
)


def private_umask() -> None:
    """Files and directories this process makes are its own unless it says otherwise."""
    os.umask(PRIVATE_UMASK)


def tightened(mode: int, allowed: int) -> int | None:
    """The permission bits `mode` should have under `allowed`, or None when it is fine.

    Only removes bits: a file already stricter than `allowed` is left alone.
    """
    perm = stat.S_IMODE(mode)
    new = perm & allowed
    return None if new == perm else new


def _matches(data: Path, pattern: str) -> Iterator[Path]:
    if pattern == ".":
        yield data
    else:
        yield from sorted(data.glob(pattern))


def tighten_data_dir(data: Path) -> list[tuple[Path, int, int]]:
    """Remove group/other access from the data directory's private paths.

    Returns (path, old bits, new bits) for each path changed. Symbolic links
    are skipped, never followed: a chmod must not reach outside DATA.
    """
    changed: list[tuple[Path, int, int]] = []
    for pattern, allowed in PRIVATE_PATHS:
        for path in _matches(data, pattern):
            try:
                st = path.lstat()
            except FileNotFoundError:
                continue
            if stat.S_ISLNK(st.st_mode):
                continue
            new = tightened(st.st_mode, allowed)
            if new is not None:
                os.chmod(path, new)
                changed.append((path, stat.S_IMODE(st.st_mode), new))
    return changed


def secure_start(data: Path) -> None:
    """What a daemon does first: private umask, then tighten an older data directory."""
    private_umask()
    if data.is_dir():
        for path, old, new in tighten_data_dir(data):
            logging.getLogger("roost").warning(
                "tightened %s from %o to %o (other users could read it)", path, old, new
            )


def setup_logging(role: str) -> None:
    """Every daemon's log: INFO (or ROOST_LOG_LEVEL) to stderr, each line
    naming the role and the process."""
    level = os.environ.get("ROOST_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format=f"%(asctime)s {role}[%(process)d] %(levelname)s %(name)s: %(message)s",
    )
    # zmq.auth logs every handshake at DEBUG; keep our own refusals at WARNING.
    logging.getLogger("zmq.auth").setLevel(logging.WARNING)


# Set by a process that runs several roles itself (roost.cli.rolehost):
# `run_daemon` then hands it (role, main) instead of running `main`.
hosted: Callable[[str, Callable[[asyncio.Event], Awaitable[None]]], None] | None = None


def run_daemon(role: str, main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run `main(stop)` on uvloop (when installed) until it returns; SIGTERM
    and SIGINT set `stop`.

    Whatever ends it decides the exit status (`roost.proc.exits`): a
    `ConfigError` or `Unavailable` exits with its named status and its message
    as the last line on stderr (no traceback: it is not a bug), which is what
    a supervisor such as `roost up` reports; anything else is SOFTWARE, with
    the traceback.
    """
    if hosted is not None:
        hosted(role, main)
        return
    setup_logging(role)

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await main(stop)
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    try:
        run_loop(runner)
    except Exception as exc:
        code, message = exit_for(exc)
        if code == ExitCode.SOFTWARE:
            logging.getLogger("roost").exception("%s failed", role)
        print(f"{role}: {message}", file=sys.stderr, flush=True)
        raise SystemExit(code) from None


def run_loop(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run `main()` on a fresh event loop: uvloop when installed."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
        return
    uvloop.run(main())
