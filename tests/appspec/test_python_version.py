"""Which Python an app asks for, and which interpreter of a builder's that is (pure)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from roost.appspec import python_version as pv
from roost.appspec.reader import Diagnostics

from .conftest import MakeApp
from .test_cli_check import run


@dataclass(frozen=True)
class Py:
    version: str
    carried: bool = True
    path: str = ""


BUILDER = [Py("3.10.13"), Py("3.11.2", carried=False), Py("3.11.7"), Py("3.12.1"), Py("3.13.0")]


def asked(files: dict[str, str], epio: str | None = None) -> tuple[str | None, str, Diagnostics]:
    diag = Diagnostics()
    version, source = pv.request_from_files(files, epio, diag)
    return version, source, diag


@pytest.mark.parametrize(
    ("files", "epio", "want"),
    [
        ({".python-version": "3.12\n"}, None, ("3.12", ".python-version")),
        ({".python-version": "# x\n\ncpython-3.13.0\n3.12"}, None, ("3.13.0", ".python-version")),
        ({"runtime.txt": "python-3.10.13\n"}, None, ("3.10.13", "runtime.txt")),
        ({}, "3.11", ("3.11", pv.EPIO_SOURCE)),
        ({}, None, (None, "")),
        ({".python-version": "\n# nothing\n"}, None, (None, "")),
    ],
)  # fmt: skip
def test_the_version_asked_for_and_where(
    files: dict[str, str], epio: str | None, want: tuple[str | None, str]
) -> None:
    version, source, diag = asked(files, epio)
    assert (version, source) == want
    assert not diag.errors and not diag.warnings


def test_the_first_file_decides_and_a_disagreeing_one_warns() -> None:
    version, source, diag = asked(
        {".python-version": "3.12", "runtime.txt": "python-3.11.7"}, "3.12"
    )
    assert (version, source) == ("3.12", ".python-version")
    assert [w.message for w in diag.warnings] == [
        "runtime.txt asks for python 3.11.7; .python-version's 3.12 is used"
    ]


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({".python-version": "pypy3.10"}, ".python-version: 'pypy3.10' is not a Python version"),
        ({"runtime.txt": "python3.12"}, "runtime.txt: 'python3.12' is not a Python version"),
        ({".python-version": "2.7.18"}, ".python-version: python 2.7.18: Roost runs Python 3 only"),
    ],
)
def test_what_is_not_a_python_3_version_is_an_error(files: dict[str, str], message: str) -> None:
    version, _, diag = asked(files)
    assert version is None
    assert [p.message for p in diag.errors] == [message]


@pytest.mark.parametrize(
    ("request_", "want"),
    [
        ("3.12", "3.12.1"),
        ("3.11", "3.11.7"),  # the newest 3.11
        ("3.11.2", "3.11.2"),  # exactly that one, though only the host has it
        ("3", "3.13.0"),
        ("3.10.13", "3.10.13"),
    ],
)
def test_choose_the_newest_that_fits(request_: str, want: str) -> None:
    assert pv.choose(request_, BUILDER).version == want


def test_a_carried_interpreter_wins_a_tie() -> None:
    host, carried = Py("3.12.1", carried=False, path="/usr/bin"), Py("3.12.1", path="/opt")
    assert pv.choose("3.12", [host, carried]) is carried
    assert pv.choose("3.12", [carried, host]) is carried


@pytest.mark.parametrize("request_", ["3.7", "3.12.9", "4"])
def test_an_unavailable_version_lists_those_there_are(request_: str) -> None:
    with pytest.raises(pv.PythonUnavailable) as err:
        pv.choose(request_, BUILDER)
    assert str(err.value) == (
        f"python {request_} is not available; this builder has 3.10, 3.11, 3.12, 3.13"
    )


def test_a_builder_with_no_interpreter_says_none() -> None:
    with pytest.raises(pv.PythonUnavailable, match="this builder has none"):
        pv.choose("3.12", [])


def test_roost_check_shows_the_version_and_its_file(make_app: MakeApp) -> None:
    app = {"Procfile": "web: gunicorn app:app\n", "app.py": "app = 1\n"}
    root = make_app({**app, "runtime.txt": "python-3.12.1\n", ".python-version": "3.13\n"})
    code, out = run(str(root))
    assert code == 0
    assert "python: 3.13 (from .python-version)" in out
    code, out = run(str(root), "--json")
    report = json.loads(out)
    assert report["spec"]["python_version"] == "3.13"
    assert [w["message"] for w in report["warnings"]] == [
        "no requirements file, so nothing will be installed",
        "runtime.txt asks for python 3.12.1; .python-version's 3.13 is used",
    ]
    (root / ".python-version").unlink()
    (root / "runtime.txt").unlink()
    code, out = run(str(root))
    assert code == 0 and "python: the builder's default" in out
    (root / "runtime.txt").write_text("pypy-3.10\n")
    code, out = run(str(root), "--json")
    assert code == 1
    assert [e["message"] for e in json.loads(out)["errors"]] == [
        "runtime.txt: 'pypy-3.10' is not a Python version"
    ]
