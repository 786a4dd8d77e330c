"""Procfiles on their own and merged with an epio.ini."""

from __future__ import annotations

from pathlib import Path

import pytest

from roost.appspec import AppSpecError, parse_procfile_spec
from roost.appspec.compose import compose
from roost.appspec.epio import DJANGO_ENTRYPOINT
from roost.appspec.model import ProcessSpec
from roost.appspec.procfile import parse_procfile
from roost.appspec.runtime import RuntimeVars, argv


def errors(text: str) -> list[tuple[int, str]]:
    with pytest.raises(AppSpecError) as info:
        parse_procfile(text)
    assert all(p.file == "Procfile" for p in info.value.problems)
    return [(p.line, p.message) for p in info.value.problems]


def test_process_types_release_and_port() -> None:
    spec = parse_procfile_spec(
        "# processes\n\nweb: gunicorn -b 0.0.0.0:$PORT app:app\r\n"
        "worker:python worker.py\nrelease: python manage.py migrate\nclock: ./clock ${PORT}"
    )
    assert spec.processes == {
        "web": ProcessSpec(
            name="web",
            kind="command",
            command="gunicorn -b 0.0.0.0:$PORT app:app",
            web=True,
            source="Procfile:3",
        ),
        "worker": ProcessSpec(
            name="worker", kind="command", command="python worker.py", source="Procfile:4"
        ),
        "clock": ProcessSpec(
            name="clock", kind="command", command="./clock ${PORT}", source="Procfile:6"
        ),
    }
    assert spec.release_command == "python manage.py migrate"
    assert spec.sources == ["Procfile"]
    rv = RuntimeVars(
        app_id="a", app_dir=Path("/a"), venv_dir=Path("/v"), data_directory=Path("/d"), port=8123
    )
    assert argv(spec, spec.processes["web"], rv) == [
        "/bin/sh",
        "-c",
        "exec gunicorn -b 0.0.0.0:8123 app:app",
    ]


def test_bad_lines_are_all_reported() -> None:
    problems = errors("web gunicorn app:app\nweb: a\n\nweb: b\nmy worker: x\nempty:\nw.x: y\n")
    assert [line for line, _ in problems] == [1, 4, 5, 6, 7]
    assert "not a 'type: command' line" in problems[0][1]
    assert "declared again (first on line 2)" in problems[1][1]
    assert "no command" in problems[3][1]
    assert "may only contain" in problems[4][1]


def test_an_empty_procfile_is_an_error() -> None:
    assert errors("# nothing\n\n") == [(0, "the Procfile declares no process types")]


def test_procfile_web_replaces_the_epio_wsgi_server_with_a_warning() -> None:
    result = compose(
        "[wsgi]\nentrypoint = app:app\n[static]\n/static = static\n",
        "web: gunicorn app:app --workers 4\nworker: celery worker\n",
    )
    spec = result.spec
    assert spec is not None
    assert list(spec.processes) == ["web", "worker"]
    assert spec.processes["web"].command == "gunicorn app:app --workers 4"
    assert spec.static[0].url_prefix == "/static"  # everything else still comes from epio.ini
    assert spec.sources == ["epio.ini", "Procfile"]
    [warning] = result.diag.warnings
    assert (warning.file, warning.line) == ("Procfile", 1)
    assert "replaces the one declared at epio.ini:2" in warning.message


def test_procfile_web_replacing_the_default_django_handler_is_silent() -> None:
    result = compose(
        "[wsgi]\nrequirements = r.txt\n[services]\npostgres = true\n",
        "web: gunicorn site:app\nrelease: ./migrate\n",
    )
    spec = result.spec
    assert spec is not None and result.diag.warnings == []
    assert spec.django is None  # it was only implied by the missing entrypoint
    assert spec.processes["web"].command == "gunicorn site:app"
    assert spec.release_command == "./migrate"
    assert spec.services == ["postgres"]


def test_procfile_keeps_an_explicit_django_section() -> None:
    result = compose("[django]\nbase = proj\n", "web: gunicorn proj.wsgi\n")
    assert result.spec is not None and result.spec.django is not None
    assert result.spec.django.base == "proj"


def test_epio_processes_with_other_names_are_kept() -> None:
    result = compose(
        "[wsgi]\nrequirements = r.txt\n[django]\nbase = .\n[celery]\ndjcelery = true\n",
        "clock: python clock.py\n",
    )
    assert result.spec is not None
    assert list(result.spec.processes) == ["web", "celeryd", "clock"]
    assert result.spec.processes["web"].entrypoint == DJANGO_ENTRYPOINT


def test_a_broken_procfile_stops_the_merge() -> None:
    result = compose("[wsgi]\nentrypoint = a:b\n", "nonsense\n")
    assert result.spec is None
    assert [(p.file, p.line) for p in result.diag.errors] == [("Procfile", 1)]
