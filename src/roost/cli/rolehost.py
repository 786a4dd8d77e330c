"""`roost roles ROLE[=METRICS_PORT] ...`: several roles' daemons in one process.

Theory of operation. On one machine (`roost up` with ROOST_ROLE_HOST=on)
every interpreter costs ~15-20 MB of its own whatever it runs (imports,
and the copy-on-write copies a forked one makes of its parent's pages), so
the quiet roles run in one (issue 21): each role's daemon is its usual
`run()`, whose `roost.daemonize.run_daemon` hands its main coroutine here
(`daemonize.hosted`) instead of running it, and every main runs as a task
of one event loop. Nothing in a role knows: it is given its own stop event
as `run_daemon` gives it.

Signals. A role may add its own handlers (the runner and the servicehost
take SIGUSR2 as "hand over": leave your tenants running for the next one).
On a shared loop the last handler added would replace the others', so the
loop keeps each role's handler beside the others' (`SignalFan`) and a
signal calls all of them; a role with no handler of its own for it is
stopped. So SIGTERM stops every role (the runner stops its instances, as
`roost up`'s full stop wants); SIGUSR2 makes the runner and the servicehost
hand over and stops the rest, which is how a reload replaces this process.

A role that ends by itself (a crash, an error at start) ends the process:
the others are handed over as SIGUSR2 would (the runner's instances and
the servicehost's servers outlive it, as when a lone runner crashes) and
the process exits with that role's status and last words (`roost up`
restarts it, or stops when it is a configuration error).

backupd lowers its own priority (`roost.proc.priority`: niceness and I/O
priority are a thread's on Linux) so that backups come after the apps: it
runs on a thread of its own with its own loop, which the signals reach
through the same table.

Isolation. The roles run as one Unix user already (root, or the
platform's user), reading the same DATA: a compromised role could read
another's keys or ptrace it either way, so one address space gives an
attacker nothing they had not. What a shared process does change is
fate: a role that blocks the loop stalls the others, and a crash restarts
them all (tenants untouched). Tenant code never runs in it: builds and
instances run in their own sandboxed processes, as before.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from roost import daemonize
from roost.proc.exits import ExitCode, exit_for

# The program's name in `roost up` (its supervisor, DATA/up.json's roles).
HOST = "roles"
# The roles it can run, in `roost up`'s start order; and what each one's
# daemon is (`roost.cli.daemons`' commands).
HOSTABLE = ("controller", "builder", "runner", "gateway", "servicehost", "backupd")
# Roles run on a thread of their own (their own priority).
OWN_THREAD = frozenset({"backupd"})
# The signals the host handles; a role's own handlers ride on these.
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2)
# The loop's executor serves every role's to_thread calls: as many threads
# as each role's own loop would have had (threads are made only when used).
EXECUTOR_THREADS_PER_ROLE = 6

Main = Callable[[asyncio.Event], Awaitable[None]]
Callback = tuple[Callable[..., object], tuple[Any, ...]]

# The role the running code belongs to: signal handlers and log lines are tagged with it.
ROLE: contextvars.ContextVar[str] = contextvars.ContextVar("roost_role", default=HOST)


def parse_specs(args: list[str]) -> list[tuple[str, int | None]]:
    """`ROLE[=METRICS_PORT]` arguments -> (role, port); ValueError on a bad one."""
    out: list[tuple[str, int | None]] = []
    for arg in args:
        role, _, port = arg.partition("=")
        if role not in HOSTABLE:
            raise ValueError(f"{role!r} is not a role that can share a process {HOSTABLE}")
        if role in [r for r, _ in out]:
            raise ValueError(f"{role} named twice")
        if port and not (port.isdigit() and 0 <= int(port) < 65536):
            raise ValueError(f"{arg!r}: the metrics port is not a port number")
        out.append((role, int(port) if port else None))
    if not out:
        raise ValueError("no role named")
    return out


@dataclass
class SignalFan:
    """Each role's handler of each signal, side by side (pure: no loop)."""

    handlers: dict[int, dict[str, Callback]] = field(default_factory=dict)

    def add(
        self, sig: int, role: str, callback: Callable[..., object], args: tuple[Any, ...]
    ) -> None:
        self.handlers.setdefault(sig, {})[role] = (callback, args)

    def remove(self, sig: int, role: str) -> bool:
        return self.handlers.get(sig, {}).pop(role, None) is not None

    def fire(self, sig: int, roles: list[str]) -> list[str]:
        """Call every handler of `sig`; the roles in `roles` with none of
        their own, which are to be stopped."""
        mine = dict(self.handlers.get(sig, {}))
        for callback, args in mine.values():
            callback(*args)
        return [r for r in roles if r not in mine]


class _FanOut:
    """An event loop whose signal handlers are kept per role (`SignalFan`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fan = SignalFan()

    def install(self, sig: int, callback: Callable[[int], None]) -> None:
        """The host's own handler of `sig`, which fires the table."""
        super().add_signal_handler(sig, callback, sig)  # type: ignore[misc]

    def add_signal_handler(self, sig: int, callback: Callable[..., object], *args: Any) -> None:
        if sig not in SIGNALS:
            super().add_signal_handler(sig, callback, *args)  # type: ignore[misc]
            return
        self.fan.add(sig, ROLE.get(), callback, args)

    def remove_signal_handler(self, sig: int) -> bool:
        if sig not in SIGNALS:
            return bool(super().remove_signal_handler(sig))  # type: ignore[misc]
        return self.fan.remove(sig, ROLE.get())


def _loop_class() -> type[asyncio.AbstractEventLoop]:
    """uvloop's loop when installed (as every daemon's), with `_FanOut`."""
    base: type[asyncio.AbstractEventLoop]
    try:
        import uvloop

        base = uvloop.Loop
    except ImportError:
        base = asyncio.SelectorEventLoop
    return type("FanOutLoop", (_FanOut, base), {})


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class _RoleFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.role = ROLE.get()
        return True


def setup_logging() -> None:
    """As `daemonize.setup_logging`, each line naming the role that wrote it."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RoleFilter())
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(role)s[%(process)d] %(levelname)s %(name)s: %(message)s")
    )
    logging.basicConfig(level=os.environ.get("ROOST_LOG_LEVEL", "INFO").upper(), handlers=[handler])
    logging.getLogger("zmq.auth").setLevel(logging.WARNING)


@dataclass
class Role:
    """One hosted role: its main, its stop, how it ended."""

    name: str
    main: Main | None = None
    stop: asyncio.Event | None = None
    loop: asyncio.AbstractEventLoop | None = None  # its own thread's, else the host's
    error: BaseException | None = None
    ended: bool = False
    asked: bool = False  # told to stop (before its loop may exist)

    def ask_stop(self) -> None:
        self.asked = True
        if self.loop is not None and self.stop is not None and not self.loop.is_closed():
            try:
                self.loop.call_soon_threadsafe(self.stop.set)
            except RuntimeError:
                pass  # its loop has just closed: it has ended


def start_role(role: str, data: Path, metrics_port: int | None) -> None:
    """The role's daemon as `roost ROLE` starts it (`roost.cli.daemons`),
    its main handed to `daemonize.hosted`."""
    from roost.cli.daemons import _run

    overrides: dict[str, Any] = {}
    if metrics_port is not None:
        overrides["metrics_port"] = metrics_port
    module = "backups" if role == "backupd" else role
    _run(module, data, overrides=overrides)


class Host:
    """The roles of one process; `run()` until they have all ended."""

    def __init__(self, data: Path, specs: list[tuple[str, int | None]]) -> None:
        self.data = data
        self.specs = specs
        self.roles = {name: Role(name) for name, _ in specs}
        self.done: asyncio.Event | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.first: Role | None = None  # the first to end by itself
        self.stopping = False

    # -- daemonize.hosted
    def hosted(self, role: str, main: Main) -> None:
        name = ROLE.get()
        target = self.roles[name]
        target.main = main
        if threading.current_thread() is not threading.main_thread():
            self._run_here(target)

    def _run_here(self, role: Role) -> None:
        """A role on its own thread: its own loop, until its main returns."""
        loop = _new_loop()
        stop = asyncio.Event()
        role.stop, role.loop = stop, loop
        if role.asked:
            stop.set()
        assert role.main is not None
        main = role.main
        try:
            loop.run_until_complete(main(stop))
        except BaseException as exc:
            role.error = exc
        finally:
            try:
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                loop.close()
                self._ended(role)

    def _ended(self, role: Role) -> None:
        """(Any thread.) Wake the host: `role` has ended."""
        role.ended = True
        if self.loop is not None and self.done is not None:
            self.loop.call_soon_threadsafe(self.done.set)

    # -- signals
    def on_signal(self, sig: int) -> None:
        assert isinstance(self.loop, _FanOut)
        self.stopping = True
        for name in self.loop.fan.fire(sig, list(self.roles)):
            self.roles[name].ask_stop()

    def hand_over_all(self) -> None:
        """What SIGUSR2 does: tenants left running, every role stopped."""
        self.on_signal(signal.SIGUSR2)

    # -- the loop
    async def _main_role(self, role: Role) -> None:
        ROLE.set(role.name)
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        role.stop, role.loop = stop, loop
        if role.asked:
            stop.set()
        # As run_daemon: TERM and INT stop it (kept beside its own handlers).
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            assert role.main is not None
            await role.main(stop)
        except BaseException as exc:
            role.error = exc
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            self._ended(role)

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, _FanOut)
        self.loop = loop
        self.done = asyncio.Event()
        loop.set_default_executor(
            ThreadPoolExecutor(EXECUTOR_THREADS_PER_ROLE * len(self.roles), "roles")
        )
        for sig in SIGNALS:
            loop.install(sig, self.on_signal)
        threads: list[threading.Thread] = []
        tasks: list[asyncio.Task[None]] = []
        for name, port in self.specs:
            role = self.roles[name]
            ctx = contextvars.copy_context()
            ctx.run(ROLE.set, name)
            if name in OWN_THREAD:
                t = threading.Thread(
                    target=ctx.run, args=(self._thread_role, role, port), name=name
                )
                t.start()
                threads.append(t)
                continue
            try:
                ctx.run(start_role, name, self.data, port)
            except BaseException as exc:  # its run() failed before its main
                role.error = exc
                self._ended(role)
                break
            tasks.append(loop.create_task(self._main_role(role), name=name, context=ctx))
        while True:
            await self.done.wait()
            self.done.clear()
            ended = [r for r in self.roles.values() if r.ended]
            if ended and self.first is None and not self.stopping:
                self.first = next((r for r in ended if r.error is not None), ended[0])
                logging.getLogger("roost").warning(
                    "%s ended: every role in this process goes (tenants left running)",
                    self.first.name,
                )
                self.hand_over_all()
            if all(r.ended or (r.main is None and r.loop is None) for r in self.roles.values()):
                break
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for t in threads:
            await asyncio.to_thread(t.join)

    def _thread_role(self, role: Role, port: int | None) -> None:
        try:
            start_role(role.name, self.data, port)  # calls hosted() -> _run_here
        except BaseException as exc:
            role.error = exc
        if not role.ended:
            self._ended(role)

    def run(self) -> None:
        """Until every role has ended; exits as the first to fail would have."""
        setup_logging()
        daemonize.secure_start(self.data)
        daemonize.hosted = self.hosted
        try:
            with asyncio.Runner(loop_factory=_loop_class()) as runner:
                runner.run(self._serve())
        finally:
            daemonize.hosted = None
        failed = [r for r in self.roles.values() if r.error is not None]
        if self.first is not None and self.first.error is not None:
            failed.insert(0, self.first)
        for role in failed[:1]:
            assert role.error is not None
            if isinstance(role.error, SystemExit):  # its command refused (a bad setting)
                raise role.error
            code, message = exit_for(role.error)
            if code == ExitCode.SOFTWARE:
                logging.getLogger("roost").error("%s failed", role.name, exc_info=role.error)
            print(f"{role.name}: {message}", file=sys.stderr, flush=True)
            raise SystemExit(code)
        if self.first is not None:
            # A role returned by itself: the process goes, and is restarted.
            print(f"{self.first.name}: ended by itself", file=sys.stderr, flush=True)
            raise SystemExit(ExitCode.SOFTWARE)
