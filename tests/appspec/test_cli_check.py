"""`roost check`: tables or JSON, exit 0 when deployable and 1 when not, no tracebacks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from roost.cli import check as check_module
from roost.cli.check import check

from .conftest import MakeApp
from .epio_files import fixture

GOOD = {
    "epio.ini": "[wsgi]\nentrypoint = app:app\n[static]\n/static = static\n"
    "[services]\nredis = true\n[redis]\nmemory = 16\n[cron]\n./sync = */5 * * * *\n"
    "./tidy = @daily overlap=skip\n[basic_auth]\nme = s3cret\n",
    "app.py": "app = None\n",
    "requirements.txt": "",
    "static/x.css": "",
    "sync": "#!/bin/sh\n",
    "tidy": "#!/bin/sh\n",
}


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(check, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    return result.exit_code, result.output


def test_deployable_app_prints_the_plan(make_app: MakeApp) -> None:
    root = make_app(GOOD, executable=("sync", "tidy"))
    code, out = run(str(root))
    assert code == 0
    for words in ("Processes", "gunicorn app:app", "Static routes", "/static", "redis (16 MB)",
                  "Cron jobs", "*/5 * * * *", "./sync", "0 0 * * * overlap=skip",
                  "deployable"):  # fmt: skip
        assert words in out
    assert "s3cret" not in out


def test_json_output(make_app: MakeApp) -> None:
    root = make_app(GOOD, executable=("sync",))
    code, out = run(str(root), "--json")
    data = json.loads(out)
    assert code == 0 and data["ok"] is True and data["errors"] == []
    assert data["files"] == ["epio.ini"]
    assert data["spec"]["processes"]["web"]["entrypoint"] == "app:app"
    assert data["spec"]["basic_auth"]["users"] == {"me": "***"}
    assert data["spec"]["cron"][0]["schedule"] == "*/5 * * * *"


def test_errors_exit_1_with_file_and_line(make_app: MakeApp) -> None:
    root = make_app({"epio.ini": "[wsgi]\nentrypoint = app:app\n[services]\nsolr = true\n"})
    code, out = run(str(root), "--json")
    data = json.loads(out)
    assert code == 1 and data["ok"] is False
    lines = {(e["file"], e["line"]) for e in data["errors"]}
    assert ("epio.ini", 4) in lines and ("epio.ini", 2) in lines  # solr; app.py missing
    code, out = run(str(root))
    assert code == 1 and "not deployable" in out and "solr" in out


def test_single_files(tmp_path: Path) -> None:
    code, out = run(str(fixture("merge_conflict.ini")))
    assert code == 1 and "merge-conflict" in out and ":7" in out
    procfile = tmp_path / "Procfile"
    procfile.write_text("web: gunicorn app:app\nrelease: ./migrate\n")
    code, out = run(str(procfile))
    assert code == 0 and "release (once per deploy)" in out


def test_missing_path(tmp_path: Path) -> None:
    code, out = run(str(tmp_path / "nope"), "--json")
    assert code == 1 and "does not exist" in json.loads(out)["errors"][0]["message"]


def test_an_internal_error_is_reported_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def broken(path: Path) -> None:
        raise RuntimeError("kaboom")

    monkeypatch.setattr(check_module, "check_path", broken)
    code, out = run(str(tmp_path), "--json")
    assert code == 1 and "internal error" in json.loads(out)["errors"][0]["message"]


def test_app_json_in_the_plan_and_its_problems(make_app: MakeApp) -> None:
    app_json = {
        "healthchecks": {"web": [{"path": "/up", "attempts": 4, "content": "ok"}]},
        "scripts": {"dokku": {"predeploy": "./migrate", "postdeploy": "./warm"}},
        "formation": {"web": {"quantity": 2}},
        "colour": "blue",
    }
    root = make_app({"Procfile": "web: gunicorn app:app\n", "app.json": json.dumps(app_json)})
    code, out = run(str(root))
    assert code == 0
    for words in ("app.json", "Health checks", "/up", "200-399 containing 'ok'",
                  "predeploy (once per deploy)", "./migrate", "./warm", "formation: web=2",
                  "Warnings", "colour", "deployable"):  # fmt: skip
        assert words in out
    code, out = run(str(root), "--json")
    data = json.loads(out)
    assert data["files"] == ["Procfile", "app.json"]
    assert data["spec"]["healthchecks"]["web"]["attempts"] == 4
    assert data["warnings"][0]["file"] == "app.json"
    (root / "app.json").write_text('{"healthchecks": {"web": [{"timeout": "ten"}]}}')
    code, out = run(str(root), "--json")
    data = json.loads(out)
    assert code == 1 and data["errors"] == [
        {
            "message": 'healthchecks.web[0].timeout: expected a number, got "ten"',
            "file": "app.json",
            "line": 0,
            "hint": "",
        }
    ]
    (root / "app.json").write_text('{"cron": [}')
    code, out = run(str(root / "app.json"), "--json")
    (error,) = json.loads(out)["errors"]
    assert code == 1 and error["line"] == 1
    assert error["message"].startswith("invalid JSON at line 1, column 11")


def test_singletons_in_the_plan(make_app: MakeApp) -> None:
    app_json = {"formation": {"clock": {"quantity": 1, "singleton": True}}}
    procfile = "web: gunicorn app:app\nclock: python clock.py\n"
    root = make_app({"Procfile": procfile, "app.json": json.dumps(app_json)})
    code, out = run(str(root))
    assert code == 0
    assert "singletons (never two at once; the old one stops before the new starts): clock" in (
        " ".join(out.split())
    )
    code, out = run(str(root), "--json")
    assert json.loads(out)["spec"]["singletons"] == ["clock"]
