"""Render a process type into the argv and environment of one instance.

Pure: the runner (and `run`, cron) pass in the per-instance facts (port, unix
socket, directories) and get back exactly what to exec.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from roost.appspec.model import AppSpec, ProcessSpec


@dataclass(frozen=True)
class RuntimeVars:
    app_id: str
    app_dir: Path  # the unpacked checkout (cwd of processes)
    venv_dir: Path  # the release's virtualenv
    data_directory: Path
    port: int = 0
    unix_sock: str = ""
    extra_env: dict[str, str] = field(default_factory=dict)


_PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def substitute(text: str, rv: RuntimeVars) -> str:
    """Fill ep.io's `%(name)s` placeholders and Heroku's `$PORT`."""
    values = {
        "port": str(rv.port),
        "unix_sock": rv.unix_sock,
        "app_id": rv.app_id,
        "data_directory": str(rv.data_directory),
    }

    def repl(m: re.Match[str]) -> str:
        return values.get(m.group(1), m.group(0))

    text = _PLACEHOLDER.sub(repl, text)
    return re.sub(r"\$\{PORT\}|\$PORT\b", str(rv.port), text)


def environment(spec: AppSpec, rv: RuntimeVars, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment every process of the app sees."""
    env = dict(base or {})
    bin_dir = rv.venv_dir / "bin"
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', os.defpath)}"
    env["VIRTUAL_ENV"] = str(rv.venv_dir)
    env.pop("PYTHONHOME", None)
    paths = [str(rv.app_dir / p) for p in spec.python_path]
    if spec.django is not None:
        paths.append(str(rv.app_dir / spec.django.base))
    paths.append(str(rv.app_dir))
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    env["HOME"] = str(rv.data_directory.parent)
    env["ROOST_APP"] = rv.app_id
    env["ROOST_DATA_DIR"] = str(rv.data_directory)
    if rv.port:
        env["PORT"] = str(rv.port)
    if rv.unix_sock:
        env["ROOST_UNIX_SOCK"] = rv.unix_sock
    for key, value in spec.env.items():
        env[key] = substitute(value, rv)
    if spec.django is not None and spec.django.settings_module:
        env.setdefault("DJANGO_SETTINGS_MODULE", spec.django.settings_module)
    env.update(rv.extra_env)
    return env


def argv(spec: AppSpec, proc: ProcessSpec, rv: RuntimeVars) -> list[str]:
    """The command line of one instance of `proc`."""
    if proc.kind == "wsgi":
        bind: list[str] = []
        if rv.unix_sock:
            bind += ["--bind", f"unix:{rv.unix_sock}"]
        if rv.port:
            bind += ["--bind", f"127.0.0.1:{rv.port}"]
        return [
            str(rv.venv_dir / "bin" / "python"),
            "-m",
            "gunicorn",
            *bind,
            "--workers",
            "2",
            "--access-logfile",
            "-",
            "--chdir",
            str(rv.app_dir),
            proc.entrypoint,
        ]
    return ["/bin/sh", "-c", "exec " + substitute(proc.command, rv)]


def cwd(proc: ProcessSpec, rv: RuntimeVars) -> Path:
    return (rv.app_dir / proc.cwd).resolve()
