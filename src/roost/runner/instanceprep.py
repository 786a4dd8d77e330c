"""What an instance's start prepares before its shim runs it.

The supervisor (`Supervisor._start`) chooses the port and the socket and
records the start; here the launch is rendered (`launch.render`) and written
(`layout.materialize`), and the instance's identity, directories, sandbox and
cgroup are set up (`confine.py`). Any failure is raised (LaunchError,
ConfineError, TenantError, OSError, RuntimeError) for the supervisor to
record as a failed start, like a crash, so the usual backoff applies.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from roost.appspec.runtime import graceful_timeout
from roost.runner.confine import (
    TenantDefaults,
    give_tree,
    image_binds,
    interpreter_mount,
    prepare_dirs,
    tenant_spec,
)
from roost.runner.launch import Launch, LaunchError, render
from roost.runner.layout import Layout, materialize
from roost.runner.model import Record
from roost.tenant.launch import Prepared, Tenancy


def prepare(
    rec: Record,
    *,
    image_root: Path,
    port: int,
    unix_sock: str,
    bind_host: str,
    stop_grace_s: float,
    layout: Layout,
    tenancy: Tenancy,
    defaults: TenantDefaults,
) -> tuple[Launch, Prepared]:
    """The instance's launch, written out, and how to run it confined."""
    a = rec.assignment
    launch = render(
        a,
        process_name=rec.process_name,
        image_root=image_root,
        data_directory=layout.data_directory(a.app),
        port=port,
        unix_sock=unix_sock,
        bind_host=bind_host,
        bundle_config_dir=layout.bundle_dir(a.app, a.instance_id),
        graceful_timeout_s=graceful_timeout(a.env, stop_grace_s),
    )
    materialize(launch)
    if unix_sock:
        with contextlib.suppress(FileNotFoundError):
            Path(unix_sock).unlink()  # a stale socket would make gunicorn refuse to bind
    socket_dir = Path(unix_sock).parent if unix_sock else None
    return launch, confine(rec, launch, image_root, socket_dir, layout, tenancy, defaults)


def confine(
    rec: Record,
    launch: Launch,
    image_root: Path,
    socket_dir: Path | None,
    layout: Layout,
    tenancy: Tenancy,
    defaults: TenantDefaults,
) -> Prepared:
    """The instance's identity, directories, sandbox and cgroup (see confine.py)."""
    a = rec.assignment
    if not launch.cwd.is_dir():
        # Said here: inside a sandbox it would be bwrap's own terse error.
        raise LaunchError(f"could not start: working directory {launch.cwd} does not exist")
    bundle = layout.bundle_dir(a.app, a.instance_id)
    if not tenancy.enabled:
        if socket_dir is not None:
            socket_dir.mkdir(parents=True, exist_ok=True)
        return Prepared(argv=list(launch.argv), identity=None, cgroup=None)
    spec = tenant_spec(
        a,
        layout=layout,
        unit=a.instance_id,
        cwd=launch.cwd,
        image_paths=image_binds(image_root),
        defaults=defaults,
        socket_dir=socket_dir,
        image_mounts=tuple(filter(None, [interpreter_mount(image_root)])),
    )
    prepare_dirs(
        spec.identity, layout, a.app, bundle_dir=bundle, socket_dir=socket_dir,
        data_quota_mb=a.data_quota_mb,
    )  # fmt: skip
    give_tree(spec.identity, layout.data_directory(a.app))
    return tenancy.prepare(spec, launch.argv)
