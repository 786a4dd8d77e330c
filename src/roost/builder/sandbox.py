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

The shared unprivileged uid protects the builder host (image store, keys,
other roles' files) from build code; it does not isolate concurrent builds
from one another, nor the shared uv cache from a hostile sdist.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from roost.builder.errors import BuildError
from roost.sysuser import SystemUserError, ensure_system_user

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
        os.lchown(root, self.uid, self.gid)
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                os.lchown(os.path.join(dirpath, name), self.uid, self.gid)

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


def _drop_privileges(user: BuildUser) -> Callable[[], None]:
    uid, gid = user.uid, user.gid

    def drop() -> None:
        os.setsid()
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)

    return drop


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
) -> Completed:
    """Run one command; stream its output into `log` (None: keep it quiet).

    Raises BuildError on timeout or when captured stdout passes its limit;
    `log` raising (the output budget) also ends the command. The process
    group is killed on every way out that is not a normal exit.
    """
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=str(cwd),
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE if capture_stdout else asyncio.subprocess.STDOUT,
        # uvloop's subprocess_exec takes neither user= nor group=, so the
        # privilege drop happens in the child before exec.
        preexec_fn=_drop_privileges(user) if user.dropped else os.setsid,
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
            kill_group(proc.pid)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        else:
            kill_group(proc.pid)  # stragglers the command left in its session
    return Completed(returncode=rc, stdout=bytes(captured), output_tail=tail)


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
