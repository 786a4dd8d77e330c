"""The build steps that run the app's own code, as its build user in a jail:
check (import the WSGI entrypoints) and collect static (Django's
collectstatic and the [static] mappings). Build (roost.builder.pipeline)
runs them in order; they read and set its fields."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from roost.builder import lock as locks
from roost.builder.errors import BuildError
from roost.builder.pack import read_untrusted_text
from roost.builder.sandbox import run
from roost.builder.staticstep import read_routes, static_mappings

if TYPE_CHECKING:
    from roost.builder.pipeline import Build


async def check(b: Build) -> None:
    assert b.spec is not None
    script = b.dir / "import_check.py"
    shutil.copyfile(Path(__file__).with_name("import_check.py"), script)
    os.chmod(script, 0o644)
    wsgi = [p for p in b.spec.processes.values() if p.kind == "wsgi"]
    if not wsgi:
        b.log("       no WSGI process: nothing to import")
    if wsgi and not (b.spec.release_command or b.spec.predeploy_command):
        # The instances' start imports it before any traffic, and a
        # release whose instances crash fails with their traceback: this
        # was a fifth of a code-only push's time to live. Kept when a
        # release phase would run first, on code that may not import.
        names = ", ".join(sorted({p.entrypoint or p.name for p in wsgi}))
        b.log(f"       {names}: imported by the new instances as they start")
        return
    for proc in wsgi:
        if not proc.entrypoint:
            raise BuildError(f"process {proc.name!r} has no WSGI entrypoint")
        done = await run(
            [str(b.venv / "bin" / "python"), str(script), proc.entrypoint],
            user=b.user,
            cwd=(b.checkout / proc.cwd),
            env=b.runtime_env(),
            log=b.log,
            timeout=b.ws.settings.build_check_timeout_s,
            jail=b.app_jail_for(f"check-{proc.name}"),
        )
        if done.returncode != 0:
            why = next((ln.strip() for ln in reversed(done.output_tail) if ln.strip()), "")
            raise BuildError(f"entrypoint {proc.entrypoint!r} does not import: {why}")


async def collect_static(b: Build) -> None:
    assert b.spec is not None
    has_django = any(p.lower().startswith("django==") for p in locks.pins(b.lock))
    django_cfg = None
    if b.django is not None:
        if has_django:
            django_cfg = {
                "base_dir": str(b.checkout / b.django.base),
                "settings_module": b.django.settings_module,
            }
        else:
            b.log("       Django app without Django in its requirements: no collectstatic")
    mappings = static_mappings(b.spec, b.checkout, b.site_packages(), b.log)
    if django_cfg is None and not mappings:
        b.log("       no static files")
        return
    tools = b.dir / "tools"
    tools.mkdir(mode=0o755)
    b.user.chown(tools)
    script = b.dir / "static_script.py"
    shutil.copyfile(Path(__file__).with_name("static_script.py"), script)
    os.chmod(script, 0o644)
    config = {
        "checkout": str(b.checkout),
        "django": django_cfg,
        "mappings": mappings,
        "staging": str(b.out / "staging"),
        "out": str(b.out),
        "tools": str(tools),
    }
    cfg_path = b.dir / "static.json"
    cfg_path.write_text(json.dumps(config))
    os.chmod(cfg_path, 0o644)
    env = b.runtime_env()
    env.pop("DJANGO_SETTINGS_MODULE", None)
    argv = [str(b.venv / "bin" / "python"), str(script), str(cfg_path)]
    await _as_build_user(b, argv, b.checkout, env)
    raw = read_untrusted_text(b.out / "routes.json", 1 << 20)
    b.static_routes = read_routes(raw, b.spec.static_directory_indexes)
    # The collected tree, packed by the builder itself in pack (staticpack).
    b.static_bundle = b.out / "staging"


async def _as_build_user(
    b: Build, argv: list[str], cwd: Path, env: dict[str, str], timeout: float | None = None
) -> None:
    done = await run(
        argv, user=b.user, cwd=cwd, env=env, log=b.log, timeout=timeout,
        jail=b.app_jail_for("static", b.out, b.dir / "tools"),
    )  # fmt: skip
    if done.returncode != 0:
        raise BuildError(f"{Path(argv[0]).name} failed (exit {done.returncode})")
