"""Render a process type into the argv and environment of one instance.

Pure: the runner (and `run`, cron) pass in the per-instance facts (port, unix
socket, directories) and get back exactly what to exec.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from roost.appspec.model import AppSpec, CronJob, ProcessSpec
from roost.appspec.webserving import PRELOAD_MODULE, preload_source, web_serving


@dataclass(frozen=True)
class RuntimeVars:
    app_id: str
    app_dir: Path  # the unpacked checkout (cwd of processes)
    venv_dir: Path  # the release's virtualenv
    data_directory: Path
    port: int = 0
    unix_sock: str = ""
    extra_env: dict[str, str] = field(default_factory=dict)
    # Directory holding this release's bundle_config.py (see
    # roost.appspec.bundle_config); first on PYTHONPATH when set.
    bundle_config_dir: Path | None = None
    # Address the instance's TCP port listens on: loopback on one host, the
    # host's cluster address when routers on other hosts must reach it.
    bind_host: str = "127.0.0.1"
    # gunicorn's --graceful-timeout (0: gunicorn's own default): see graceful_timeout.
    graceful_timeout_s: int = 0


# The config var an app sets to give its processes longer (or shorter) to
# finish what they are doing once told to stop: gunicorn's workers their
# requests in flight (--graceful-timeout), any process its work before KILL.
GRACEFUL_TIMEOUT_VAR = "ROOST_GRACEFUL_TIMEOUT"
MAX_GRACEFUL_TIMEOUT_S = 3600


def parse_graceful_timeout(value: str) -> int:
    """Whole seconds, 1..MAX_GRACEFUL_TIMEOUT_S; ValueError saying why not."""
    try:
        seconds = int(value.strip())
    except ValueError:
        seconds = -1
    if not 1 <= seconds <= MAX_GRACEFUL_TIMEOUT_S:
        raise ValueError(
            f"{GRACEFUL_TIMEOUT_VAR} must be whole seconds from 1 to {MAX_GRACEFUL_TIMEOUT_S}, "
            f"not {value!r}"
        )
    return seconds


def graceful_timeout(env: Mapping[str, str], default_s: float) -> int:
    """The seconds an instance has between TERM and KILL: its app's
    ROOST_GRACEFUL_TIMEOUT, else the platform's default (a value the API would
    have refused, set before it checked, counts as unset)."""
    value = env.get(GRACEFUL_TIMEOUT_VAR)
    if value is not None:
        try:
            return parse_graceful_timeout(value)
        except ValueError:
            pass
    return max(1, round(default_s))


_PLACEHOLDER = re.compile(r"%\((\w+)\)s")
# Variables the platform owns: the app's [env] cannot override them.
_PLATFORM_ENV = ("PORT", "VIRTUAL_ENV", "ROOST_APP", "ROOST_DATA_DIR", "ROOST_UNIX_SOCK")
# Shell syntax after which `exec` would cut a command line short.
_SHELL_CONTROL = re.compile(r"[;&|\n`()]")


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


def environment(
    spec: AppSpec, rv: RuntimeVars, base: dict[str, str] | None = None
) -> dict[str, str]:
    """The environment every process of the app sees."""
    env = dict(base or {})
    django_base = rv.app_dir / spec.django.base if spec.django is not None else None
    # The app's own scripts (`manage.py sync` in [cron]) run by name, as on ep.io;
    # the virtualenv comes first so the app cannot shadow python or gunicorn.
    bins = [str(rv.venv_dir / "bin"), str(rv.app_dir)]
    if django_base is not None and django_base != rv.app_dir:
        bins.append(str(django_base))
    env["PATH"] = os.pathsep.join([*bins, env.get("PATH", os.defpath)])
    env["VIRTUAL_ENV"] = str(rv.venv_dir)
    env.pop("PYTHONHOME", None)
    paths = [str(rv.bundle_config_dir)] if rv.bundle_config_dir is not None else []
    paths += [str(rv.app_dir / p) for p in spec.python_path]
    if django_base is not None:
        paths.append(str(django_base))
    paths.append(str(rv.app_dir))
    if spec.checkout_name != "app" and rv.app_dir.name == spec.checkout_name:
        # ep.io's "project names in imports": `import <checkout>.module` works.
        paths.append(str(rv.app_dir.parent))
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    env["HOME"] = str(rv.data_directory.parent)
    env["ROOST_APP"] = rv.app_id
    env["ROOST_DATA_DIR"] = str(rv.data_directory)
    if rv.port:
        env["PORT"] = str(rv.port)
    if rv.unix_sock:
        env["ROOST_UNIX_SOCK"] = rv.unix_sock
    platform = {k: env[k] for k in _PLATFORM_ENV if k in env}
    for key, value in spec.env.items():
        env[key] = substitute(value, rv)
    env.update(platform)
    if spec.django is not None and spec.django.settings_module:
        env.setdefault("DJANGO_SETTINGS_MODULE", spec.django.settings_module)
    env.update(rv.extra_env)
    return env


def shell_argv(command: str, rv: RuntimeVars) -> list[str]:
    """A shell command line, placeholders filled; `exec`ed when that is safe so
    signals reach the program rather than the shell."""
    text = substitute(command, rv)
    if not _SHELL_CONTROL.search(text):
        text = "exec " + text
    return ["/bin/sh", "-c", text]


def argv(spec: AppSpec, proc: ProcessSpec, rv: RuntimeVars) -> list[str]:
    """The command line of one instance of `proc`."""
    if proc.kind == "wsgi":
        bind: list[str] = []
        if rv.unix_sock:
            bind += ["--bind", f"unix:{rv.unix_sock}"]
        if rv.port:
            host = f"[{rv.bind_host}]" if ":" in rv.bind_host else rv.bind_host
            bind += ["--bind", f"{host}:{rv.port}"]
        # Workers, threads, preloading: the app's config vars (webserving).
        serving = web_serving(rv.extra_env)
        options = serving.gunicorn_options(proc.async_type)
        app = proc.entrypoint
        if serving.preload and rv.bundle_config_dir is not None:
            app = f"{PRELOAD_MODULE}:application"  # see preload_file
        if rv.graceful_timeout_s:
            options += ["--graceful-timeout", str(rv.graceful_timeout_s)]
        return [
            str(rv.venv_dir / "bin" / "python"),
            "-m",
            "gunicorn",
            *bind,
            *options,
            "--access-logfile",
            "-",
            "--chdir",
            str(rv.app_dir),
            app,
        ]
    return shell_argv(proc.command, rv)


def preload_file(proc: ProcessSpec, rv: RuntimeVars) -> tuple[str, str] | None:
    """(file name, text) of the module `argv` names for the app when its
    arbiter preloads it (it sits beside bundle_config.py); None when not."""
    if proc.kind != "wsgi" or rv.bundle_config_dir is None:
        return None
    if not web_serving(rv.extra_env).preload:
        return None
    return f"{PRELOAD_MODULE}.py", preload_source(proc.entrypoint)


def cron_argv(job: CronJob, rv: RuntimeVars) -> list[str]:
    """The command line of one run of a cron job (its cwd is the app checkout)."""
    return shell_argv(job.command, rv)


def cwd(proc: ProcessSpec, rv: RuntimeVars) -> Path:
    return (rv.app_dir / proc.cwd).resolve()


def relative_symlink(link: str, target: str) -> str | None:
    """What to pass to os.symlink for an `AppSpec.symlinks` entry inside the app.

    Spec targets are relative to the checkout, but the OS reads a relative
    link from the link's own directory; the result is relative to that, so
    the image can move. None for a target in the data directory, which
    exists only per host: link it at start with `symlink_target`.
    """
    if "%(" in target:
        return None
    return posixpath.relpath(target, posixpath.dirname(link) or ".")


def symlink_target(target: str, rv: RuntimeVars) -> Path:
    """Where an `AppSpec.symlinks` target points on this host (absolute)."""
    return Path(os.path.normpath(rv.app_dir / substitute(target, rv)))
