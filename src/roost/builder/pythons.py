"""The interpreters apps choose from, found once when the builder starts.

Where they come from: ROOST_BUILD_PYTHONS when set (executables, or
installation directories whose `bin/python3` is used), else what the host
has installed: pyenv's versions (`$PYENV_ROOT`, `~/.pyenv`), uv's managed
installations (`$UV_PYTHON_INSTALL_DIR`, `~/.local/share/uv/python`),
`python3.N` in /usr/local/bin and /usr/bin, and the builder's own
interpreter. uv never downloads one here (UV_PYTHON_DOWNLOADS=never): a
python-build-standalone download comes from GitHub, which a builder may not
reach; one installed beforehand with `uv python install` is found like any
other.

Each is probed as the build user, confined as the build steps that will use
it are (its installation bound read-only), so only interpreters a build can
run are offered; CPython 3.10 or newer only (the oldest the builder's own
scripts, run by the app's venv, are tested with). A configured one that does
not probe is a configuration error; a found one is passed over, and logged.

Which one a build uses (`Pythons.for_app`): the newest that the app's
request names (roost.appspec.python_version), one its image can carry
winning a tie; with no request, ROOST_BUILD_PYTHON when set, else the
newest of Roost's own minor version.
"""

from __future__ import annotations

import asyncio
import glob
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from roost.appspec import python_version as pv
from roost.appspec.model import AppSpec
from roost.builder.errors import BuildError
from roost.builder.interpreter import Interpreter, run_probe
from roost.builder.jails import interpreter_dirs
from roost.builder.sandbox import BuildUser, Jail
from roost.tenant.cgroups import Limits
from roost.tenant.launch import Tenancy

log = logging.getLogger("roost.builder")

MIN_VERSION = (3, 10)
_SYSTEM_NAME = re.compile(r"python3\.[0-9]+")


def candidate_paths(configured: str, own: str, home: str, env: Mapping[str, str]) -> list[str]:
    """Interpreter executables to probe, links resolved, each once (reads the disk)."""
    if configured:
        out = []
        for entry in filter(None, (e.strip() for e in configured.split(":"))):
            out.append(os.path.join(entry, "bin", "python3") if os.path.isdir(entry) else entry)
        return _unique(out)
    roots = [
        os.path.join(env.get("PYENV_ROOT") or os.path.join(home, ".pyenv"), "versions"),
        env.get("UV_PYTHON_INSTALL_DIR") or os.path.join(home, ".local", "share", "uv", "python"),
    ]
    found = [
        p for root in roots for p in sorted(glob.glob(os.path.join(root, "*", "bin", "python3")))
    ]
    for d in ("/usr/local/bin", "/usr/bin"):
        found += sorted(p for p in glob.glob(os.path.join(d, "python3.*")) if _is_system(p))
    return _unique([*found, own])


def _is_system(path: str) -> bool:
    return _SYSTEM_NAME.fullmatch(os.path.basename(path)) is not None


def _unique(paths: list[str]) -> list[str]:
    return list(dict.fromkeys(os.path.realpath(p) for p in paths))


def usable(interp: Interpreter) -> bool:
    if interp.implementation != "cpython":
        return False
    try:
        return pv.version_tuple(interp.version)[:2] >= MIN_VERSION
    except ValueError:  # "3.14.0a1": not a release
        return False


@dataclass(frozen=True)
class Pythons:
    available: tuple[Interpreter, ...]
    default: Interpreter

    def for_app(self, spec: AppSpec) -> Interpreter:
        """The interpreter of a build of `spec`; BuildError naming those there are."""
        if not spec.python_version:
            return self.default
        try:
            return pv.choose(spec.python_version, self.available)
        except pv.PythonUnavailable as exc:
            raise BuildError(f"{exc} (asked for by {spec.python_source})") from None

    def describe(self) -> str:
        return ", ".join(f"{i.version} ({i.path})" for i in self.available)


async def probe(
    path: str, user: BuildUser, home: Path, tenancy: Tenancy, unit: str
) -> Interpreter | str:
    """What `path` is, run as the build user in a jail binding its installation;
    a string saying why not when it does not run."""
    jail = Jail(tenancy, unit, readonly=interpreter_dirs(path), limits=Limits(memory_mb=256))
    confined = tenancy.enabled and user.dropped
    cwd = Path("/tmp") if confined else home
    return await run_probe(path, user, cwd, jail)


async def discover(
    configured: str, explicit_default: bool, own: Interpreter, user: BuildUser, home: Path,
    tenancy: Tenancy,
) -> Pythons:  # fmt: skip
    """Probe the candidates (see the module docstring). BuildError when a
    configured one does not run or is too old."""
    paths = candidate_paths(configured, own.path, os.path.expanduser("~"), os.environ)
    results = await asyncio.gather(
        *(probe(p, user, home, tenancy, f"probe-python-{n}") for n, p in enumerate(paths))
    )
    available: list[Interpreter] = []
    for path, got in zip(paths, results, strict=True):
        if isinstance(got, Interpreter) and usable(got):
            available.append(got)
            continue
        why = got if isinstance(got, str) else f"{got.implementation} {got.version}: not offered"
        if configured:
            raise BuildError(f"ROOST_BUILD_PYTHONS: {path}: {why}")
        log.info("python %s passed over: %s", path, why)
    available.sort(key=lambda i: (pv.version_tuple(i.version), i.carried))
    default = own
    if not explicit_default and available:
        try:
            default = pv.choose(own.minor, available)
        except pv.PythonUnavailable:
            default = available[-1]  # none of Roost's own minor: the newest there is
    if default not in available:
        available.append(default)
    return Pythons(available=tuple(available), default=default)
