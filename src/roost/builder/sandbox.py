"""Running untrusted build commands: as an unprivileged user, bounded, streamed.

Theory of operation: when the builder runs as root, every command that can
execute code from the upload (uv building sdists, collectstatic, the import
check) runs as `settings.build_user` (a system user created on first use),
in its own session, with a scrubbed environment. Its output is streamed line
by line into the build log, whose byte budget is the output limit. A command
that times out, overruns the output budget, or whose build is cancelled has
its whole process group killed before the error propagates, so nothing of a
dead build keeps running. When not root there is no one to drop to: commands
run as the current user and the build log says so.

As root, each such command also runs in a jail (`Jail`, through
roost.tenant, as the runner's instances do): a bubblewrap sandbox that binds
only what the step needs (the build's own directory, the dependency layer,
the interpreter; the uv cache only for the uv steps; the layer read-only
wherever app code runs) and a cgroup of its own, killed whole when the step
ends. With its own PID namespace too, nothing a build starts, setsid or
not, outlives its step, so nothing of one build waits for the next.

The uid: the app's own build user (`b<id>-<app>`, roost.tenant.identity)
for every step that runs the app's code or its packages' (the import check,
collectstatic, a source build); the shared `settings.build_user` only for
uv installing wheels (--no-build: no package code runs), which owns the
shared uv cache (roost.builder.layers.UvAs).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from roost.builder.errors import BuildError
from roost.proc import spawn
from roost.proc.spawn import ChildSetup, child_setup
from roost.proc.stop import signal_group
from roost.sysuser import SystemUserError, chown_tree, ensure_system_user
from roost.tenant.cgroups import Limits
from roost.tenant.identity import Identity
from roost.tenant.launch import Prepared, Tenancy, TenantError, TenantSpec
from roost.tenant.sandbox import SandboxSpec

# Environment variables passed through to build commands (index and proxy
# configuration); everything else in the builder's environment stays out.
PASS_ENV = (
    "UV_INDEX_URL",
    "UV_DEFAULT_INDEX",
    "UV_EXTRA_INDEX_URL",
    "UV_INDEX",
    "UV_NATIVE_TLS",
    "PIP_INDEX_URL",
    "PIP_EXTRA_INDEX_URL",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
)


@dataclass(frozen=True)
class BuildUser:
    name: str
    uid: int
    gid: int
    # True when commands actually switch to this user (the builder is root).
    dropped: bool

    def chown_tree(self, root: Path) -> None:
        """Give a tree we created to the build user (never following symlinks)."""
        if not self.dropped:
            return
        chown_tree(root, self.uid, self.gid)

    def chown(self, path: Path) -> None:
        if self.dropped:
            os.lchown(path, self.uid, self.gid)


def ensure_build_user(name: str) -> BuildUser:
    """The user build commands run as, creating the system user when root."""
    try:
        a = ensure_system_user(name)
    except SystemUserError as exc:
        raise BuildError(f"build user: {exc}; refusing to run builds") from None
    return BuildUser(name=a.name, uid=a.uid, gid=a.gid, dropped=a.dropped)


def base_env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "TMPDIR": str(home),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    for key in PASS_ENV:
        if key in os.environ:
            env[key] = os.environ[key]
    env.update(extra or {})
    return env


@dataclass
class Completed:
    returncode: int
    stdout: bytes  # only when capture_stdout; else b""
    output_tail: list[str]  # last lines of the merged output (for error messages)


LogFn = Callable[[str], None]


# The builder runs with the daemons' private umask (077); what a build step
# makes (the venv, collected static files) goes into images that every app's
# own user must read, so steps get the usual 022 back.
STEP_UMASK = 0o022


def _step_setup(user: BuildUser, prepared: Prepared | None) -> ChildSetup:
    """Its own session, dying with the builder; jailed: its cgroup and
    bwrap's signal shield (bwrap drops to the user itself); else the uid drop."""
    if prepared is not None:
        return child_setup(enter=prepared.preexec)  # the 022 umask is the launch's
    if user.dropped:
        return child_setup(umask=STEP_UMASK, uid=user.uid, gid=user.gid)
    return child_setup(umask=STEP_UMASK)


@dataclass(frozen=True)
class Jail:
    """Where one build step runs (see the module docstring)."""

    tenancy: Tenancy
    unit: str  # the step's cgroup: unique among running steps
    readonly: tuple[Path, ...] = ()
    writable: tuple[Path, ...] = ()
    limits: Limits = field(default_factory=Limits)

    def prepare(self, user: BuildUser, cwd: Path, argv: Sequence[str]) -> Prepared | None:
        """The confined launch; None when this builder cannot confine (not root)."""
        if not (self.tenancy.enabled and user.dropped):
            return None
        spec = TenantSpec(
            identity=Identity(user.name, user.uid, user.gid),
            sandbox=SandboxSpec(
                cwd=cwd, hostname="build", readonly=self.readonly, writable=self.writable
            ),
            limits=self.limits,
            unit=self.unit,
            umask=STEP_UMASK,
        )
        try:
            return self.tenancy.prepare(spec, argv)
        except TenantError as exc:
            raise BuildError(f"cannot confine the build step: {exc}") from None


async def run(
    argv: Sequence[str],
    *,
    user: BuildUser,
    cwd: Path,
    env: dict[str, str],
    log: LogFn | None,
    timeout: float | None = None,
    capture_stdout: bool = False,
    stdout_limit: int = 16 << 20,
    indent: str = "       ",
    jail: Jail | None = None,
) -> Completed:
    """Run one command; stream its output into `log` (None: keep it quiet).

    Raises BuildError on timeout or when captured stdout passes its limit;
    `log` raising (the output budget) also ends the command. The process
    group (and, jailed, the whole cgroup) is killed on every way out.
    """
    prepared = jail.prepare(user, cwd, argv) if jail is not None else None
    try:
        return await _run(
            argv, prepared, user=user, cwd=cwd, env=env, log=log, timeout=timeout,
            capture_stdout=capture_stdout, stdout_limit=stdout_limit, indent=indent,
        )  # fmt: skip
    finally:
        if prepared is not None:
            prepared.finish()  # whatever the step left running dies with its cgroup


async def _run(
    argv: Sequence[str],
    prepared: Prepared | None,
    *,
    user: BuildUser,
    cwd: Path,
    env: dict[str, str],
    log: LogFn | None,
    timeout: float | None,
    capture_stdout: bool,
    stdout_limit: int,
    indent: str,
) -> Completed:
    # Jailed, bwrap enters `cwd` inside the sandbox.
    command, workdir = (prepared.argv, "/") if prepared is not None else (list(argv), str(cwd))
    proc = await spawn.start(
        command,
        cwd=workdir,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE if capture_stdout else asyncio.subprocess.STDOUT,
        setup=_step_setup(user, prepared),
    )
    tail: list[str] = []
    captured = bytearray()

    async def pump_lines(stream: asyncio.StreamReader) -> None:
        while True:
            raw = await stream.readline()
            if not raw:
                return
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            tail.append(line)
            del tail[:-40]
            if log is not None:
                log(indent + line)

    async def pump_bytes(stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(1 << 16):
            captured.extend(chunk)
            if len(captured) > stdout_limit:
                raise BuildError(f"{Path(argv[0]).name} printed more than {stdout_limit} bytes")

    try:
        async with asyncio.timeout(timeout):
            async with asyncio.TaskGroup() as tg:
                assert proc.stdout is not None
                if capture_stdout:
                    assert proc.stderr is not None
                    tg.create_task(pump_bytes(proc.stdout))
                    tg.create_task(pump_lines(proc.stderr))
                else:
                    tg.create_task(pump_lines(proc.stdout))
            rc = await proc.wait()
    except TimeoutError:
        raise BuildError(f"{Path(argv[0]).name} did not finish within {timeout:.0f} s") from None
    except BaseExceptionGroup as eg:
        # Surface the first real error (a BuildError from the budget, usually).
        raise eg.exceptions[0] from None
    finally:
        if proc.returncode is None:
            signal_group(proc.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        else:
            signal_group(proc.pid, signal.SIGKILL)  # stragglers the command left in its session
    return Completed(returncode=rc, stdout=bytes(captured), output_tail=tail)
