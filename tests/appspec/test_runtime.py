"""Rendering a process into argv and environment for one instance."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import msgspec
import pytest

from roost.appspec import parse_epio
from roost.appspec.model import AppSpec, CronJob, DjangoSpec, ProcessSpec
from roost.appspec.runtime import (
    RuntimeVars,
    argv,
    cron_argv,
    cwd,
    environment,
    graceful_timeout,
    preload_file,
    relative_symlink,
    shell_argv,
    substitute,
    symlink_target,
)
from roost.appspec.webserving import WebServing, check, web_serving

RV = RuntimeVars(
    app_id="shop",
    app_dir=Path("/srv/shop/app"),
    venv_dir=Path("/srv/shop/venv"),
    data_directory=Path("/srv/shop/data"),
    port=8001,
    unix_sock="/run/shop.sock",
)


def test_placeholders() -> None:
    text = (
        "celeryd -n h-%(app_id)s-p%(port)s --pid=%(data_directory)s/c.pid %(unix_sock)s "
        "$PORT ${PORT} $PORTS %(x)s"
    )
    assert substitute(text, RV) == (
        "celeryd -n h-shop-p8001 --pid=/srv/shop/data/c.pid /run/shop.sock 8001 8001 $PORTS %(x)s"
    )


def test_wsgi_argv_with_async_worker() -> None:
    spec = parse_epio("[wsgi]\nentrypoint = app:app\nasync_type = gevent\n")
    args = argv(spec, spec.processes["web"], RV)
    assert args[:3] == ["/srv/shop/venv/bin/python", "-m", "gunicorn"]
    assert args[3:5] == ["--bind", "unix:/run/shop.sock"]
    assert args[args.index("--worker-class") : args.index("--worker-class") + 2] == [
        "--worker-class",
        "gevent",
    ]
    assert args[-1] == "app:app"


def test_graceful_timeout_reaches_gunicorn() -> None:
    spec = parse_epio("[wsgi]\nentrypoint = app:app\n")
    assert "--graceful-timeout" not in argv(spec, spec.processes["web"], RV)
    args = argv(spec, spec.processes["web"], replace(RV, graceful_timeout_s=45))
    assert args[args.index("--graceful-timeout") + 1] == "45"
    # The app's config var, else the platform's default; a bad value counts as unset.
    assert graceful_timeout({"ROOST_GRACEFUL_TIMEOUT": " 45 "}, 10.0) == 45
    assert graceful_timeout({}, 10.0) == 10 and graceful_timeout({}, 0.2) == 1
    assert graceful_timeout({"ROOST_GRACEFUL_TIMEOUT": "0"}, 10.0) == 10
    assert graceful_timeout({"ROOST_GRACEFUL_TIMEOUT": "1h"}, 10.0) == 10


def test_web_serving_defaults_and_config_vars() -> None:
    spec = parse_epio("[wsgi]\nentrypoint = app:app\n")
    web = spec.processes["web"]

    def opts(env: dict[str, str], async_type: str = "") -> list[str]:
        proc = msgspec.structs.replace(web, async_type=async_type)
        args = argv(spec, proc, replace(RV, extra_env=env))
        return args[args.index("--bind", 4) + 2 : args.index("--access-logfile")]

    # Two sync workers sharing the app imported once by the arbiter.
    assert opts({}) == ["--workers", "2", "--preload"]
    assert web_serving({}) == WebServing(workers=2, threads=1, preload=True)
    threaded = {"ROOST_WEB_WORKERS": " 1", "ROOST_WEB_THREADS": "4", "ROOST_WEB_PRELOAD": "Off"}
    assert opts(threaded) == ["--workers", "1", "--worker-class", "gthread", "--threads", "4"]
    # An async worker class has no threads; a bad stored value counts as unset.
    assert opts({"ROOST_WEB_THREADS": "4"}, "gevent") == [
        "--workers",
        "2",
        "--worker-class",
        "gevent",
        "--preload",
    ]
    assert web_serving({"ROOST_WEB_WORKERS": "0", "ROOST_WEB_PRELOAD": "maybe"}) == WebServing()
    for key, bad in (
        ("ROOST_WEB_WORKERS", "33"),
        ("ROOST_WEB_THREADS", "1.5"),
        ("ROOST_WEB_PRELOAD", ""),
    ):
        with pytest.raises(ValueError, match=f"{key} must be"):
            check(key, bad)
    check("ROOST_WEB_THREADS", "64")
    check("OTHER", "anything")


def test_commands_are_execed_only_when_that_keeps_them_whole() -> None:
    assert shell_argv("python server.py %(unix_sock)s", RV) == [
        "/bin/sh",
        "-c",
        "exec python server.py /run/shop.sock",
    ]
    assert shell_argv("cd sub && ./run", RV)[2] == "cd sub && ./run"
    assert shell_argv("a; b", RV)[2] == "a; b"
    job = CronJob(command="manage.py sync", schedule="*/5 * * * *")
    assert cron_argv(job, RV) == ["/bin/sh", "-c", "exec manage.py sync"]


def test_environment() -> None:
    spec = AppSpec(
        python_path=["lib"],
        django=DjangoSpec(base="proj", settings_module="settings"),
        env={"UPLOADS": "%(data_directory)s/up", "PORT": "80", "ROOST_APP": "evil"},
        checkout_name="app",
    )
    rv = RuntimeVars(**{**RV.__dict__, "bundle_config_dir": Path("/srv/shop/bundle")})
    env = environment(spec, rv, {"PATH": "/usr/bin", "PYTHONHOME": "/x"})
    assert env["PATH"].split(":") == [
        "/srv/shop/venv/bin",
        "/srv/shop/app",
        "/srv/shop/app/proj",
        "/usr/bin",
    ]
    assert env["PYTHONPATH"].split(":") == [
        "/srv/shop/bundle",
        "/srv/shop/app/lib",
        "/srv/shop/app/proj",
        "/srv/shop/app",
    ]
    assert "PYTHONHOME" not in env
    assert env["UPLOADS"] == "/srv/shop/data/up"
    # The platform's own variables cannot be overridden by [env].
    assert (env["PORT"], env["ROOST_APP"]) == ("8001", "shop")
    assert env["DJANGO_SETTINGS_MODULE"] == "settings"
    assert env["HOME"] == "/srv/shop"


def test_checkout_name_makes_project_imports_work() -> None:
    spec = AppSpec(checkout_name="wincstar")
    rv = RuntimeVars(**{**RV.__dict__, "app_dir": Path("/srv/shop/wincstar")})
    assert environment(spec, rv)["PYTHONPATH"].split(":")[-1] == "/srv/shop"
    assert environment(AppSpec(), RV)["PYTHONPATH"] == "/srv/shop/app"


def test_symlink_targets_and_cwd() -> None:
    assert symlink_target("pyconde/conf/epio.py", RV) == Path("/srv/shop/app/pyconde/conf/epio.py")
    assert symlink_target("%(data_directory)s/local.py", RV) == Path("/srv/shop/data/local.py")
    proc = ProcessSpec(name="w", kind="command", command="x", cwd="jobs")
    assert cwd(proc, RV) == Path("/srv/shop/app/jobs")


def test_relative_symlinks_for_the_image() -> None:
    # Targets in the spec are relative to the checkout, not to the link.
    assert relative_symlink("pyconde/settings.py", "pyconde/conf/epio.py") == "conf/epio.py"
    assert relative_symlink("apps/pages/templates", "templates/pages") == "../../templates/pages"
    assert relative_symlink(".glitchapi.txt", ".glitchapi-epio.txt") == ".glitchapi-epio.txt"
    assert relative_symlink("src/local.py", "%(data_directory)s/local.py") is None


def test_preloaded_app_is_imported_through_the_preload_module() -> None:
    spec = parse_epio("[wsgi]\nentrypoint = app:app\n")
    web = spec.processes["web"]
    rv = replace(RV, bundle_config_dir=Path("/srv/shop/bundle"))
    args = argv(spec, web, rv)
    assert args[-1] == "roost_preload:application" and "--preload" in args
    name, text = preload_file(web, rv) or ("", "")
    assert name == "roost_preload.py" and "import_app('app:app')" in text
    compile(text, name, "exec")
    # Not preloaded: the entrypoint itself, no module to write.
    off = replace(rv, extra_env={"ROOST_WEB_PRELOAD": "off"})
    assert argv(spec, web, off)[-1] == "app:app" and preload_file(web, off) is None
    assert preload_file(web, RV) is None and argv(spec, web, RV)[-1] == "app:app"
