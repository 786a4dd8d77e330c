"""Which Python the app virtualenvs are built on.

Never a downloaded one (UV_PYTHON_DOWNLOADS=never, and uv always gets an
explicit `--python` path). By default Roost's own base interpreter; when the
build user cannot run that one (e.g. it lives under root's 0700 home) the
system interpreter of the same major.minor version. Runners need the chosen
interpreter at the same path: the image's venv links to it (roost-image.json
records path and version).
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from roost.builder.errors import BuildError
from roost.builder.sandbox import BuildUser, base_env, run

_PROBE = (
    "import sys, platform; print(sys.version.split()[0]); "
    "print(sys.implementation.name); print(platform.machine())"
)


@dataclass(frozen=True)
class Interpreter:
    path: str
    version: str  # "3.11.2"
    implementation: str  # "cpython"
    machine: str  # "x86_64"

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


async def choose(configured: str, user: BuildUser, home: Path) -> Interpreter:
    """The first candidate the build user can run; BuildError when none."""
    tried: list[str] = []
    for cand in candidates(configured):
        try:
            done = await run(
                [cand, "-I", "-c", _PROBE],
                user=user,
                cwd=home,
                env=base_env(home),
                log=None,
                timeout=30,
                capture_stdout=True,
            )
        except (OSError, BuildError) as exc:
            tried.append(f"{cand}: {exc}")
            continue
        lines = done.stdout.decode(errors="replace").split()
        if done.returncode == 0 and len(lines) == 3:
            return Interpreter(
                path=cand, version=lines[0], implementation=lines[1], machine=lines[2]
            )
        tried.append(f"{cand}: exit {done.returncode} {' '.join(done.output_tail[-2:])}")
    raise BuildError(
        f"no Python interpreter runnable by build user {user.name!r} "
        f"(set ROOST_BUILD_PYTHON): {'; '.join(tried)}"
    )
