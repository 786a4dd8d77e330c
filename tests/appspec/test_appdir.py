"""check_app / load_app: the config checked against the app's own files."""

from __future__ import annotations

from pathlib import Path

import pytest

from roost.appspec import AppSpecError, check_app, load_app, load_file
from roost.appspec.model import StaticMapping

from .conftest import MakeApp

FLASK = "from flask import Flask\napp = Flask(__name__)\n"


def messages(report_items: list) -> list[str]:  # type: ignore[type-arg]
    return [item.message for item in report_items]


def test_a_good_flask_app(make_app: MakeApp) -> None:
    root = make_app(
        {
            "epio.ini": "[wsgi]\nentrypoint = app:app\nrequirements = requirements.txt\n"
            "[static]\n/static = static\n/robots.txt = robots.txt\n",
            "app.py": FLASK,
            "requirements.txt": "flask\n",
            "static/site.css": "",
            "robots.txt": "",
        }
    )
    report = check_app(root)
    assert report.ok and report.errors == [] and report.warnings == []
    assert report.files == ["epio.ini"]
    spec = load_app(root)
    assert spec.static == [
        StaticMapping(url_prefix="/static", path="static"),
        StaticMapping(url_prefix="/robots.txt", path="robots.txt", is_file=True),
    ]


def test_missing_requirements_and_module_are_errors_with_lines(make_app: MakeApp) -> None:
    root = make_app({"epio.ini": "[wsgi]\nrequirements = reqs.txt\nentrypoint = web:app\n"})
    report = check_app(root)
    assert not report.ok
    assert [(p.file, p.line) for p in report.errors] == [("epio.ini", 2), ("epio.ini", 3)]
    assert "'reqs.txt' is not in the app" in report.errors[0].message
    assert "module 'web' is not in the app" in report.errors[1].message
    with pytest.raises(AppSpecError) as info:
        load_app(root)
    assert len(info.value.problems) == 2


def test_entrypoint_found_in_packages_pythonpath_and_checkout_name(make_app: MakeApp) -> None:
    root = make_app(
        {
            "epio.ini": "[wsgi]\nentrypoint = pkg.web:app\npythonpath = src\n",
            "src/pkg/__init__.py": "",
            "src/pkg/web.py": FLASK,
            "requirements.txt": "",
        }
    )
    assert check_app(root).ok
    root = make_app(
        {
            "epio.ini": "[wsgi]\nentrypoint = hookrouter.web:app\n[checkout]\n"
            "directory_name = hookrouter\n",
            "web.py": FLASK,
        }
    )
    assert check_app(root).errors == []


def test_misspelled_callable_is_a_warning(make_app: MakeApp) -> None:
    root = make_app(
        {
            "epio.ini": "[wsgi]\nentrypoint = prodwsgi:applicaiton\nrequirements = r.txt\n",
            "prodwsgi.py": "application = object()\n",
            "r.txt": "",
        }
    )
    report = check_app(root)
    assert report.ok
    [warning] = report.warnings
    assert warning.line == 2 and "'applicaiton' does not appear in prodwsgi.py" in warning.message


def test_django_settings_are_looked_for_in_the_base(make_app: MakeApp) -> None:
    ini = "[django]\nbase = proj\n[wsgi]\nrequirements = r.txt\n"
    root = make_app({"epio.ini": ini, "r.txt": "", "proj/settings.py": ""})
    assert check_app(root).ok
    root.joinpath("proj/settings.py").unlink()
    report = check_app(root)
    assert "settings module 'settings' is not in the app" in report.errors[0].message
    assert report.errors[0].line == 2


def test_django_settings_created_by_a_symlink(make_app: MakeApp) -> None:
    root = make_app(
        {
            "epio.ini": "[django]\nbase = pyconde\n[symlinks]\n"
            "pyconde/settings.py = pyconde/conf/epio.py\n",
            "pyconde/conf/epio.py": "",
            "requirements.txt": "",
        }
    )
    assert check_app(root).ok


def test_explicit_settings_module_not_found_is_only_a_warning(make_app: MakeApp) -> None:
    root = make_app(
        {"epio.ini": "[django]\nbase = .\n[env]\nDJANGO_SETTINGS_MODULE = installed.settings\n"}
    )
    report = check_app(root)
    assert report.ok
    assert any("'installed.settings' is not in the app" in m for m in messages(report.warnings))


def test_implied_django_without_settings_suggests_an_entrypoint(make_app: MakeApp) -> None:
    # sontek-archive/redditor-stats: `web:app` under [wsgi] was meant as the entrypoint.
    root = make_app(
        {"epio.ini": "[wsgi]\nweb:app\nrequirements = r.txt\n", "web.py": FLASK, "r.txt": ""}
    )
    report = check_app(root)
    [problem] = report.errors
    assert "Django serves the app" in problem.message
    assert "entrypoint = module:callable" in problem.hint
    root.joinpath("wsgi.py").write_text("application = None\n")
    assert "entrypoint = wsgi:application" in check_app(root).errors[0].hint


def test_static_directory_missing_is_a_warning(make_app: MakeApp) -> None:
    root = make_app(
        {
            "epio.ini": "[wsgi]\nenabled = false\n[static]\n/static = static_root\n"
            "/tech = tech.txt\n",
            "tech.txt": "",
        }
    )
    report = check_app(root)
    assert report.ok
    [warning] = report.warnings
    assert warning.line == 4 and "collectstatic" in warning.hint
    assert report.spec is not None and report.spec.static[1].is_file


def test_directories_named_by_the_config_must_exist(make_app: MakeApp) -> None:
    root = make_app(
        {
            "epio.ini": "[wsgi]\nentrypoint = app:app\n[process-worker]\ncommand = ./w\n"
            "cwd = jobs\n[celery]\nbase = tasks\ndjcelery = true\n",
            "app.py": FLASK,
            "requirements.txt": "",
        }
    )
    report = check_app(root)
    assert sorted(p.line for p in report.errors) == [3, 7]


def test_requirements_default_to_requirements_txt(make_app: MakeApp) -> None:
    root = make_app({"epio.ini": "[wsgi]\nentrypoint = app:app\n", "app.py": FLASK})
    report = check_app(root)
    assert report.ok and "nothing will be installed" in report.warnings[0].message
    root.joinpath("requirements.txt").write_text("flask\n")
    assert load_app(root).requirements == "requirements.txt"


def test_cron_scripts_must_be_executable(make_app: MakeApp) -> None:
    files = {
        "epio.ini": "[wsgi]\nentrypoint = app:app\n[cron]\nmanage.py sync = */5 * * * *\n"
        "./update_posts.sh = 0 * * * *\nbin/missing.sh = 0 * * * *\ndjango-admin.py x = @daily\n",
        "app.py": FLASK,
        "requirements.txt": "",
        "manage.py": "#!/usr/bin/env python\n",
        "update_posts.sh": "#!/bin/sh\n",
    }
    report = check_app(make_app(files, executable=("update_posts.sh",)))
    assert report.ok
    assert [(w.line, w.message) for w in report.warnings] == [
        (4, "cron: 'manage.py' is not executable, so it cannot be run as a command"),
        (6, "cron: 'bin/missing.sh' is not in the app"),
    ]


def test_procfile_only_app(make_app: MakeApp) -> None:
    root = make_app({"Procfile": "web: gunicorn app:app\n", "requirements.txt": ""})
    report = check_app(root)
    assert report.ok and report.files == ["Procfile"]


def test_no_configuration_at_all(make_app: MakeApp, tmp_path: Path) -> None:
    report = check_app(make_app({"app.py": FLASK}))
    assert not report.ok and "neither epio.ini nor Procfile" in report.errors[0].message
    assert not check_app(tmp_path / "nowhere").ok


def test_load_file_checks_one_file_alone(make_app: MakeApp) -> None:
    root = make_app({"epio.ini": "[wsgi]\nentrypoint = absent:app\n"})
    # The module is not there, but a single file is checked on its own.
    assert load_file(root / "epio.ini").processes["web"].entrypoint == "absent:app"
    with pytest.raises(AppSpecError):
        load_file(root / "missing.ini")


def test_config_that_is_too_big_is_refused(make_app: MakeApp) -> None:
    root = make_app({"epio.ini": "[env]\n" + "# padding\n" * 200_000})
    assert "larger than" in check_app(root).errors[0].message


def test_config_symlinked_out_of_the_app_is_not_read(make_app: MakeApp, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0\n")
    root = make_app({"app.py": FLASK})
    (root / "epio.ini").symlink_to(secret)
    report = check_app(root)
    assert [p.message for p in report.errors] == ["epio.ini is a symlink that leads out of the app"]
    assert "root:x" not in str(report.errors)


def test_entrypoint_module_outside_the_app_is_not_read(make_app: MakeApp, tmp_path: Path) -> None:
    outside = tmp_path / "outside.py"
    outside.write_text("nothing here\n")
    root = make_app({"epio.ini": "[wsgi]\nentrypoint = app:app\n", "requirements.txt": ""})
    (root / "app.py").symlink_to(outside)
    report = check_app(root)
    # It exists, so no error; its contents are not looked at, so no warning either.
    assert report.ok and report.warnings == []
