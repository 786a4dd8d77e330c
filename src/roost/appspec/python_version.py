"""Which Python an app asks for, and which of a builder's interpreters that is (pure).

An app names a version in one of three places, read in this order (the
first that names one decides; another that disagrees is a warning):

  .python-version         pyenv's and uv's file: its first line that is not
                          a comment, `3.12`, `3.12.1` or `cpython-3.12`
  runtime.txt             Heroku's: `python-3.12.1`
  epio.ini [wsgi] python_version   ep.io's: `3.12`

A request names a prefix of a version: `3.12` is any 3.12.x (the newest the
builder has), `3.12.1` that release alone, `3` any 3.x. `choose` picks among
a builder's interpreters (anything with `version` and `carried`) or says,
in an error, which versions there are: "python 3.7 is not available; this
builder has 3.10, 3.11, 3.12, 3.13".
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Protocol, TypeVar

from roost.appspec.reader import Diagnostics

PYTHON_VERSION_FILE = ".python-version"
RUNTIME_TXT = "runtime.txt"
EPIO_SOURCE = "epio.ini [wsgi] python_version"
# The files are a line or two; more is not one of them.
MAX_FILE_BYTES = 4096

_VERSION_FILE = re.compile(r"(?:cpython[-@]?|python-?)?([0-9]+(?:\.[0-9]+){0,2})", re.I)
_RUNTIME = re.compile(r"python-([0-9]+(?:\.[0-9]+){0,2})")


class PythonUnavailable(ValueError):
    """The app asks for a version the builder does not have (the message lists those it has)."""


class Candidate(Protocol):
    @property
    def version(self) -> str: ...  # "3.12.1"

    @property
    def carried(self) -> bool: ...  # its image can carry it (runners need none of their own)


C = TypeVar("C", bound=Candidate)


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


def minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def matches(request: str, version: str) -> bool:
    """Whether `version` is one `request` names (a prefix of its numbers)."""
    want = version_tuple(request)
    return version_tuple(version)[: len(want)] == want


def listing(versions: Sequence[str]) -> str:
    """The minor versions there are, oldest first: "3.10, 3.11, 3.12"."""
    minors = {minor(v) for v in versions}
    return ", ".join(sorted(minors, key=version_tuple)) or "none"


def choose(request: str, available: Sequence[C]) -> C:
    """The newest of `available` that `request` names; a carried one wins a tie."""
    fits = [c for c in available if matches(request, c.version)]
    if not fits:
        raise PythonUnavailable(
            f"python {request} is not available; this builder has "
            f"{listing([c.version for c in available])}"
        )
    return max(fits, key=lambda c: (version_tuple(c.version), c.carried))


def _from_version_file(text: str) -> str | None:
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            m = _VERSION_FILE.fullmatch(line)
            return m.group(1) if m else line
    return None


def request_from_files(
    files: Mapping[str, str], epio_value: str | None, diag: Diagnostics
) -> tuple[str | None, str]:
    """(the version asked for, where) from the texts of .python-version and
    runtime.txt (absent ones missing from `files`) and epio.ini's value.

    A value that is not a version is an error naming its file; a Python 2
    one too (Roost runs Python 3 only).
    """
    asked: list[tuple[str, str]] = []
    if PYTHON_VERSION_FILE in files:
        got = _from_version_file(files[PYTHON_VERSION_FILE])
        if got is not None:
            asked.append((got, PYTHON_VERSION_FILE))
    if RUNTIME_TXT in files:
        text = files[RUNTIME_TXT].strip()
        if text:
            m = _RUNTIME.fullmatch(text)
            asked.append((m.group(1) if m else text, RUNTIME_TXT))
    if epio_value is not None:
        asked.append((epio_value, EPIO_SOURCE))
    for value, source in asked:
        if not re.fullmatch(r"[0-9]+(\.[0-9]+){0,2}", value):
            hint = "e.g. python-3.12.1" if source == RUNTIME_TXT else "e.g. 3.12"
            diag.error(f"{source}: {value!r} is not a Python version", source, 0, hint)
            return None, ""
        if value.split(".")[0] != "3":
            diag.error(
                f"{source}: python {value}: Roost runs Python 3 only",
                source,
                0,
                "name a Python 3 version, e.g. 3.12",
            )
            return None, ""
    if not asked:
        return None, ""
    value, source = asked[0]
    for other, where in asked[1:]:
        if other != value:
            diag.warn(f"{where} asks for python {other}; {source}'s {value} is used", where)
    return value, source
