"""app.json (Heroku/Dokku): what is read, how it merges with epio.ini and the
Procfile, and how bad input is reported (pure: contents in, spec out)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from roost.appspec import AppSpecError, check_app, check_file, load_app
from roost.appspec.appjson import MAX_APP_JSON_BYTES, parse_app_json
from roost.appspec.compose import Composed, compose
from roost.appspec.model import HealthCheck
from roost.appspec.reader import Diagnostics

from .conftest import MakeApp

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "appjson"
PROCFILE = "web: gunicorn app:app\nworker: python worker.py\n"


def with_procfile(app: dict[str, Any] | str, procfile: str = PROCFILE) -> Composed:
    text = app if isinstance(app, str) else json.dumps(app)
    return compose(procfile=procfile, app_json=text)


def messages(items: list[Any]) -> list[str]:
    return [item.message for item in items]


def test_dokku_documentation_example() -> None:
    composed = with_procfile((FIXTURES / "dokku.json").read_text())
    assert composed.diag.errors == []
    spec = composed.spec
    assert spec is not None
    assert spec.healthchecks == {
        "web": HealthCheck(path="/health/ready", attempts=3, source="app.json:healthchecks.web[0]")
    }
    assert spec.predeploy_command == "touch /app/predeploy.test"
    assert spec.postdeploy_command == "touch /app/postdeploy.test"
    assert spec.formation == {"web": 1}
    assert [(j.command, j.schedule, j.overlap) for j in spec.cron] == [
        ("echo 'hello'", "0 1 * * *", "allow")
    ]
    assert messages(spec.warnings) == [
        "formation.web.max_parallel: Roost does not use this; ignored"
    ]
    assert spec.sources == ["Procfile", "app.json"]


def test_heroku_documentation_example() -> None:
    composed = with_procfile((FIXTURES / "heroku.json").read_text())
    assert composed.diag.errors == []
    spec = composed.spec
    assert spec is not None
    assert spec.postdeploy_command == "bundle exec rake bootstrap"
    assert spec.env == {"WEB_CONCURRENCY": "5"}  # the secret generates nothing
    assert spec.services == ["postgres"]
    assert spec.formation == {"web": 1}
    warned = " | ".join(messages(spec.warnings))
    assert "env.SECRET_TOKEN.generator" in warned and "stays unset" in warned
    assert "formation.web.size" in warned
    assert "'openredis' is not provided" in warned and "addons[1]" in warned
    # Descriptive keys (name, logo, buildpacks, environments...) say nothing.
    assert "logo" not in warned and "buildpacks" not in warned
    assert "Roost runs it after every deploy" in warned


def test_healthcheck_fields_and_choice() -> None:
    app = {
        "healthchecks": {
            "web": [
                {"type": "liveness", "path": "/live"},
                {"type": "readiness", "path": "/ready"},
                {"type": "startup", "command": ["/bin/true"]},
                {
                    "path": "/up",
                    "timeout": 2.5,
                    "attempts": 7,
                    "wait": 1,
                    "initialDelay": 4,
                    "content": "ok",
                    "port": 8000,
                },
            ]
        }
    }
    composed = with_procfile(app)
    assert composed.diag.errors == []
    assert composed.spec is not None
    check = composed.spec.healthchecks["web"]
    # A check without a type is a startup check, which wins over the others.
    assert (check.path, check.timeout, check.attempts) == ("/up", 2.5, 7)
    assert (check.interval, check.initial_delay, check.content) == (1.0, 4.0, "ok")
    assert (check.status_min, check.status_max) == (200, 399)
    warned = messages(composed.diag.warnings)
    assert "healthchecks.web[2]: Roost runs HTTP checks only; this one is ignored" in warned
    assert "healthchecks.web[3].port: Roost checks the port the instance is given; ignored" in (
        warned
    )
    assert sum("one check per process type" in m for m in warned) == 2


@pytest.mark.parametrize(
    ("app", "expected"),
    [
        (
            {"healthchecks": {"web": [{"timeout": "ten"}]}},
            'healthchecks.web[0].timeout: expected a number, got "ten"',
        ),
        (
            {"healthchecks": {"web": [{"attempts": True}]}},
            "healthchecks.web[0].attempts: expected a whole number, got true",
        ),
        (
            {"healthchecks": {"web": [{"attempts": 0}]}},
            "healthchecks.web[0].attempts: 0 is out of range (at least 1)",
        ),
        (
            {"healthchecks": {"web": [{"path": "health"}]}},
            "healthchecks.web[0].path: 'health' is not a URL path (it starts with /)",
        ),
        (
            {"healthchecks": {"web": [{"type": "sometimes"}]}},
            "healthchecks.web[0].type: 'sometimes' is not startup, readiness or liveness",
        ),
        ({"healthchecks": {"web": {}}}, "healthchecks.web: expected a list, got {}"),
        ({"formation": {"web": {"quantity": -1}}}, "formation.web.quantity: -1 is out of range"),
        ({"formation": {"web": {"quantity": 1.5}}}, "formation.web.quantity: expected a whole"),
        ({"cron": {"command": "x"}}, "cron: expected a list"),
        ({"cron": [{"schedule": "* * * * *"}]}, "cron[0].command: is required"),
        ({"cron": [{"command": "x", "schedule": "61 * * * *"}]}, "cron[0].schedule: cron"),
        (
            {"cron": [{"command": "x", "schedule": "@daily", "concurrency_policy": "replace"}]},
            "cron[0].concurrency_policy: 'replace' is not offered",
        ),
        ({"scripts": {"dokku": {"predeploy": ["a"]}}}, "scripts.dokku.predeploy: expected a"),
        ({"env": {"A": 5}}, "env.A: expected an object, got 5"),
        ({"env": {"A": {"value": 5}}}, "env.A.value: expected a string, got 5"),
        ({"addons": [{"plan": 1}]}, "addons[0].plan: expected a string, got 1"),
        ([], "the document: expected an object, got []"),
        (None, "the document: expected an object, got null"),
    ],
)
def test_wrong_types_are_refused_with_the_key_path(app: Any, expected: str) -> None:
    composed = with_procfile(json.dumps(app))
    assert any(m.startswith(expected) for m in messages(composed.diag.errors)), composed.diag.errors
    assert all(p.file == "app.json" for p in composed.diag.errors)


def test_unknown_keys_warn_with_their_path() -> None:
    app = {
        "colour": "blue",
        "scripts": {"dokku": {"prebuild": "x"}},
        "healthchecks": {"web": [{"path": "/", "retries": 3}]},
        "cron": [{"command": "x", "schedule": "@hourly", "tz": "UTC"}],
    }
    composed = with_procfile(app)
    assert composed.diag.errors == []
    warned = messages(composed.diag.warnings)
    for path in ("colour", "scripts.dokku.prebuild", "healthchecks.web[0].retries", "cron[0].tz"):
        assert f"{path}: Roost does not know this key; ignored" in warned


def test_invalid_json_names_line_and_column() -> None:
    composed = with_procfile('{\n  "cron": [\n    {"command": "x",}\n  ]\n}\n')
    assert composed.spec is None
    (problem,) = composed.diag.errors
    assert problem.file == "app.json" and problem.line == 3
    assert problem.message.startswith("invalid JSON at line 3, column 21")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\xff{}", "not UTF-8"),
        (b" " * (MAX_APP_JSON_BYTES + 1), "larger than"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ("1" * 5000, "invalid JSON"),  # past Python's digit limit for int()
    ],
)
def test_undecodable_files(data: bytes | str, expected: str) -> None:
    diag = Diagnostics()
    assert parse_app_json(data, diag) is None
    assert expected in diag.errors[0].message


def test_merge_with_epio_ini() -> None:
    epio = (
        "[wsgi]\nentrypoint = app:app\n[services]\nredis = true\n[env]\nMODE = ini\n"
        "[cron]\n./tidy = @daily\n"
    )
    app = {
        "env": {"MODE": "json", "EXTRA": {"value": "1"}},
        "addons": ["heroku-redis:mini", "heroku-postgresql"],
        "cron": [
            {"command": "./tidy", "schedule": "0 0 * * *"},
            {"command": "./sync", "schedule": "*/5 * * * *", "concurrency_policy": "forbid"},
        ],
        "healthchecks": {"web": [{"path": "/up"}], "clock": [{"path": "/"}]},
        "formation": {"web": {"quantity": 2}, "clock": {"quantity": 1}},
    }
    composed = compose(epio=epio, app_json=json.dumps(app))
    assert composed.diag.errors == []
    spec = composed.spec
    assert spec is not None
    assert spec.env == {"MODE": "ini", "EXTRA": "1"}
    assert spec.services == ["redis", "postgres"]
    assert [(j.command, j.schedule, j.overlap) for j in spec.cron] == [
        ("./tidy", "0 0 * * *", "allow"),
        ("./sync", "*/5 * * * *", "skip"),
    ]
    assert list(spec.healthchecks) == ["web"] and spec.formation == {"web": 2}
    assert spec.sources == ["epio.ini", "app.json"]
    warned = messages(composed.diag.warnings)
    assert "env.MODE: epio.ini's [env] value is used, not app.json's" in warned
    assert "app.json:cron[0]: the same job as epio.ini:8; it runs once" in warned
    assert "healthchecks.clock: no such process type; ignored" in warned
    assert "formation.clock: no such process type; ignored" in warned


def test_problems_of_both_files_are_reported() -> None:
    composed = compose(
        epio="[wsgi]\nentrypoint = app:app\n[services]\nsolr = true\n", app_json="null"
    )
    found = messages(composed.diag.errors)
    assert "the document: expected an object, got null" in found and len(found) == 2


def test_predeploy_that_is_also_the_release_command_warns() -> None:
    app = {"scripts": {"dokku": {"predeploy": "./migrate"}, "postdeploy": "./seed"}}
    composed = with_procfile(app, PROCFILE + "release: ./migrate\n")
    assert composed.spec is not None
    assert composed.spec.release_command == composed.spec.predeploy_command == "./migrate"
    assert composed.spec.postdeploy_command == "./seed"
    assert any("runs twice" in m for m in messages(composed.diag.warnings))


def test_check_app_reads_app_json(make_app: MakeApp) -> None:
    root = make_app(
        {
            "Procfile": "web: gunicorn app:app\n",
            "app.json": json.dumps({"healthchecks": {"web": [{"path": "/up"}]}}),
        }
    )
    report = check_app(root)
    assert report.ok and report.files == ["Procfile", "app.json"]
    assert report.spec is not None and report.spec.healthchecks["web"].path == "/up"
    (root / "app.json").write_text('{"formation": {"web": {"quantity": "two"}}}')
    with pytest.raises(AppSpecError, match=r"formation\.web\.quantity: expected a whole number"):
        load_app(root)


def test_app_json_alone_is_not_an_app_but_checks_as_a_file(make_app: MakeApp) -> None:
    root = make_app({"app.json": "{}"})
    report = check_app(root)
    assert not report.ok and "neither epio.ini nor Procfile" in report.errors[0].message
    report = check_file(root / "app.json")
    assert report.ok and report.spec is not None and report.spec.sources == ["app.json"]


def test_a_process_type_marked_singleton() -> None:
    # A clock must never run twice: Roost's own key in a formation entry.
    app = {"formation": {"worker": {"quantity": 1, "singleton": True}, "web": {"quantity": 2}}}
    composed = with_procfile(app)
    assert composed.diag.errors == [] and composed.diag.warnings == []
    assert composed.spec is not None
    assert composed.spec.singletons == ["worker"]
    assert composed.spec.formation == {"worker": 1, "web": 2}
    # Without a quantity, or with singleton false.
    spec = with_procfile({"formation": {"worker": {"singleton": True}}}).spec
    assert spec is not None and spec.singletons == ["worker"] and spec.formation == {}
    spec = with_procfile({"formation": {"worker": {"singleton": False}}}).spec
    assert spec is not None and spec.singletons == []
    # A type neither file declares is dropped with a warning, once.
    composed = with_procfile({"formation": {"clock": {"singleton": True}}})
    assert composed.spec is not None and composed.spec.singletons == []
    assert messages(composed.diag.warnings) == ["formation.clock: no such process type; ignored"]


@pytest.mark.parametrize(
    ("entry", "error"),
    [
        (
            {"quantity": 2, "singleton": True},
            "formation.worker.quantity: a singleton runs one instance, not 2",
        ),
        ({"singleton": "yes"}, 'formation.worker.singleton: expected true or false, got "yes"'),
    ],
)
def test_a_singleton_is_one_instance_and_a_boolean(entry: dict[str, Any], error: str) -> None:
    composed = with_procfile({"formation": {"worker": entry}})
    assert messages(composed.diag.errors) == [error]
