"""The builder's own Python, and what a probe says of an interpreter.

Never a downloaded one (UV_PYTHON_DOWNLOADS=never, and uv always gets an
explicit `--python` path). `choose` finds the interpreter the build user can
run unconfined (the upload's extraction runs on it): by default Roost's own
base interpreter; when the build user cannot run that one (e.g. it lives
under root's 0700 home) the system interpreter of the same major.minor
version. The interpreters apps choose from are roost.builder.pythons's.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from roost.builder.errors import BuildError
from roost.builder.sandbox import BuildUser, Jail, base_env, run

PROBE = (
    "import sys, platform; print(sys.version.split()[0]); "
    "print(sys.implementation.name); print(platform.machine()); print(sys.base_prefix)"
)
# Where the host's own packages live: an interpreter installed there is the
# host's, which the image cannot carry (roost.builder.pythons).
SYSTEM_PREFIXES = ("/usr", "/")


@dataclass(frozen=True)
class Interpreter:
    path: str
    version: str  # "3.11.2"
    implementation: str  # "cpython"
    machine: str  # "x86_64"
    # Its installation (sys.base_prefix, links resolved): "/root/.pyenv/versions/3.12.1".
    prefix: str = ""

    @property
    def carried(self) -> bool:
        """Whether an image can carry this interpreter in a layer of its own:
        a CPython installed in a directory of its own, outside the host's /usr."""
        p = self.prefix
        return (
            self.implementation == "cpython"
            and p.startswith("/")
            and p not in SYSTEM_PREFIXES
            and not p.startswith("/usr/")
        )

    @property
    def python_id(self) -> str:
        """What a lock and a dependency layer depend on."""
        return f"{self.implementation}-{self.version}-{self.machine} {self.path}"

    @property
    def minor(self) -> str:
        return ".".join(self.version.split(".")[:2])


def candidates(configured: str) -> list[str]:
    if configured:
        return [configured]
    base = getattr(sys, "_base_executable", None) or sys.executable
    minor = f"{sys.version_info.major}.{sys.version_info.minor}"
    out = [os.path.realpath(base)]
    for d in ("/usr/bin", "/usr/local/bin"):
        cand = os.path.join(d, f"python{minor}")
        if os.path.exists(cand):
            out.append(cand)
    which = shutil.which(f"python{minor}")
    if which:
        out.append(which)
    seen: list[str] = []
    for c in out:
        if c not in seen:
            seen.append(c)
    return seen


def parse_probe(path: str, out: bytes) -> Interpreter | None:
    """The interpreter `PROBE` described, or None for output that is not its."""
    lines = out.decode(errors="replace").splitlines()
    if len(lines) != 4 or not all(lines):
        return None
    prefix = os.path.realpath(lines[3])
    return Interpreter(
        path=path, version=lines[0], implementation=lines[1], machine=lines[2], prefix=prefix
    )


async def run_probe(
    path: str, user: BuildUser, cwd: Path, jail: Jail | None = None
) -> Interpreter | str:
    """What `path` is, run as `user` (in `jail`); a string saying why not
    when it does not run."""
    try:
        done = await run(
            [path, "-I", "-c", PROBE],
            user=user,
            cwd=cwd,
            env=base_env(cwd),
            log=None,
            timeout=30,
            capture_stdout=True,
            jail=jail,
        )
    except (OSError, BuildError) as exc:
        return str(exc)
    found = parse_probe(path, done.stdout) if done.returncode == 0 else None
    if found is not None:
        return found
    return f"exit {done.returncode} {' '.join(done.output_tail[-2:])}"


async def choose(configured: str, user: BuildUser, home: Path) -> Interpreter:
    """The first candidate the build user can run; BuildError when none."""
    tried: list[str] = []
    for cand in candidates(configured):
        found = await run_probe(cand, user, home)
        if isinstance(found, Interpreter):
            return found
        tried.append(f"{cand}: {found}")
    raise BuildError(
        f"no Python interpreter runnable by build user {user.name!r} "
        f"(set ROOST_BUILD_PYTHON): {'; '.join(tried)}"
    )
