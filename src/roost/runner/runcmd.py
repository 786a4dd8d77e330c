"""What to exec for a one-off command (`run APP CMD`, `django APP CMD`) (pure).

The command runs in the same environment as the app's instances (the
release's virtualenv, config vars, service credentials, bundle_config.py,
data directory, data symlinks), with the checkout as its working directory,
so `ssh -t HOST run APP python manage.py shell` sees what the app sees.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from roost.appspec import runtime
from roost.appspec.bundle_config import from_environment, render_bundle_config
from roost.runner.launch import BASE_ENV, Launch, data_symlinks
from roost.wire.messages import InstanceAssignment

INTERACTIVE_SHELLS = ("/bin/bash", "/bin/sh")


def render_run(
    a: InstanceAssignment,
    *,
    command: str,
    kind: Literal["shell", "django"],
    image_root: Path,
    data_directory: Path,
    bundle_config_dir: Path,
    term: str = "",
    shell: str = "/bin/sh",  # bash, when there is one: it waits out a ^C'ed child
    has_manage_py: bool = False,
) -> Launch:
    """`has_manage_py`: the [django] base holds a manage.py (the caller looks)."""
    rv = runtime.RuntimeVars(
        app_id=a.app,
        app_dir=image_root / a.spec.checkout_name,
        venv_dir=image_root / "venv",
        data_directory=data_directory,
        extra_env=dict(a.env),
        bundle_config_dir=bundle_config_dir,
    )
    base = {**BASE_ENV, "ROOST_RELEASE": str(a.release), "ROOST_PROCESS": "run"}
    if term:
        base["TERM"] = term
    env = runtime.environment(a.spec, rv, base)
    cwd = rv.app_dir
    if kind == "django":
        django_base = rv.app_dir / (a.spec.django.base if a.spec.django is not None else ".")
        if has_manage_py:
            command = f"python manage.py {command}"
            cwd = django_base
        else:
            command = f"django-admin {command}"
    if command.strip():
        # As sshd does: the command line is the shell's to interpret. A
        # simple command is exec'ed, so ^C and signals reach it, not the shell.
        argv = runtime.shell_argv(command, rv)
        argv[0] = shell
    else:
        argv = [shell, "-i"]
    config = from_environment(
        {**a.spec.env, **a.env},
        data_directory=str(data_directory),
        version=a.release,
        app_id=a.app,
    )
    return Launch(
        argv=argv,
        env=env,
        cwd=cwd,
        web=False,
        probe_host="",
        bundle_config_dir=bundle_config_dir,
        bundle_config=render_bundle_config(config),
        symlinks=data_symlinks(a, rv),
    )


def manage_py(image_root: Path, a: InstanceAssignment) -> bool:
    if a.spec.django is None:
        return False
    return (image_root / a.spec.checkout_name / a.spec.django.base / "manage.py").is_file()
