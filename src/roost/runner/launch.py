"""What exactly to exec for one run of an instance, and what to put on disk first (pure).

Renders an assignment through `roost.appspec.runtime` against an unpacked
image root and the per-instance facts the supervisor allocated (port, unix
socket). The environment starts from a small fixed base, never the runner's
own environment, which holds platform settings an app has no business seeing.

Two files depend on the host and so cannot be in the image: ep.io's
`bundle_config.py` (service credentials, rendered from DATABASE_URL/REDIS_URL
of the assignment's env, first on PYTHONPATH) and the app's symlinks into its
data directory (`AppSpec.symlinks` targets written `%(data_directory)s/...`).
`Launch` carries both; `layout.materialize` writes them before the spawn.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from roost.appspec import runtime
from roost.appspec.bundle_config import from_environment, render_bundle_config
from roost.tenant.toolmask import TENANT_PATH
from roost.wire.messages import InstanceAssignment

BASE_ENV = {
    "PATH": TENANT_PATH,
    "LANG": "C.UTF-8",
}


@dataclass(frozen=True)
class Launch:
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    web: bool
    # Where the readiness probe knocks: gunicorn binds 127.0.0.1 (see
    # runtime.argv); a command binds where it likes, so probe the bind host.
    probe_host: str
    bundle_config_dir: Path | None = None
    bundle_config: str = ""
    # (name, text) of the module a preloading gunicorn imports the app
    # through, in bundle_config_dir (roost.appspec.webserving).
    preload: tuple[str, str] | None = None
    # (link, target) pairs: absolute paths; links inside the checkout.
    symlinks: tuple[tuple[Path, Path], ...] = ()

    @property
    def command(self) -> str:
        return shlex.join(self.argv)


class LaunchError(Exception):
    """The assignment cannot be run (the message says why)."""


def render(
    a: InstanceAssignment,
    *,
    process_name: str,
    image_root: Path,
    data_directory: Path,
    port: int,
    unix_sock: str,
    bind_host: str = "127.0.0.1",
    bundle_config_dir: Path | None = None,
    graceful_timeout_s: int = 0,
) -> Launch:
    proc = a.spec.processes.get(a.process_type)
    if proc is None:
        raise LaunchError(f"release {a.release} has no process type {a.process_type!r}")
    rv = runtime.RuntimeVars(
        app_id=a.app,
        app_dir=image_root / a.spec.checkout_name,
        venv_dir=image_root / "venv",
        data_directory=data_directory,
        port=port,
        unix_sock=unix_sock if proc.web else "",
        extra_env=dict(a.env),  # config vars and service credentials win
        bundle_config_dir=bundle_config_dir,
        bind_host=bind_host,
        graceful_timeout_s=graceful_timeout_s,
    )
    base = {
        **BASE_ENV,
        "ROOST_INSTANCE_ID": a.instance_id,
        "ROOST_PROCESS": process_name,
        "ROOST_RELEASE": str(a.release),
    }
    return Launch(
        argv=runtime.argv(a.spec, proc, rv),
        env=runtime.environment(a.spec, rv, base),
        cwd=runtime.cwd(proc, rv),
        web=proc.web,
        # gunicorn binds `bind_host` too: on a cluster host that is the host's
        # address, where nothing listens on 127.0.0.1.
        probe_host=bind_host,
        bundle_config_dir=bundle_config_dir,
        bundle_config=_bundle_config(a, data_directory) if bundle_config_dir else "",
        preload=runtime.preload_file(proc, rv),
        symlinks=data_symlinks(a, rv),
    )


def _bundle_config(a: InstanceAssignment, data_directory: Path) -> str:
    config = from_environment(
        {**a.spec.env, **a.env}, data_directory=str(data_directory), version=a.release, app_id=a.app
    )
    return render_bundle_config(config)


def data_symlinks(a: InstanceAssignment, rv: runtime.RuntimeVars) -> tuple[tuple[Path, Path], ...]:
    """The app's symlinks into its data directory (the builder made the others).

    A link that would land outside the checkout is refused.
    """
    out: list[tuple[Path, Path]] = []
    for link, target in sorted(a.spec.symlinks.items()):
        if runtime.relative_symlink(link, target) is not None:
            continue  # inside the image: made at build time
        path = Path(os.path.normpath(rv.app_dir / link))
        if not path.is_relative_to(rv.app_dir) or path == rv.app_dir:
            raise LaunchError(f"symlink {link!r} would be outside the app checkout")
        out.append((path, runtime.symlink_target(target, rv)))
    return tuple(out)


def is_web(a: InstanceAssignment) -> bool:
    proc = a.spec.processes.get(a.process_type)
    return proc is not None and proc.web
