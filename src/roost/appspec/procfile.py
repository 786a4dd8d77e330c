"""Heroku's Procfile: one `type: command` line per process type.

Blank lines and lines starting with `#` are ignored. A process type is
letters, digits, `_` and `-` (foreman/honcho's rule). `web` serves HTTP (it
should listen on `$PORT`; gunicorn does so by itself when PORT is set).
`release` is not a process: it runs once per deploy, before the new release
serves. Commands are kept as written: `$PORT` and epio.ini-style placeholders
are filled per instance by `roost.appspec.runtime`. Unlike foreman, which
skips lines it cannot read, every unreadable line is an error, and a type
declared twice is an error rather than a silent override.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from roost.appspec.errors import AppSpecError, Problem
from roost.appspec.ini import decode
from roost.appspec.model import ProcessSpec

_LINE = re.compile(r"^(?P<name>[^:\s]+)\s*:\s*(?P<command>.*)$")
_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
RELEASE = "release"


@dataclass
class Procfile:
    processes: dict[str, ProcessSpec] = field(default_factory=dict)
    release_command: str | None = None
    release_line: int = 0


def parse_procfile(data: bytes | str, filename: str = "Procfile") -> Procfile:
    """Parse a Procfile; AppSpecError names every bad line."""
    result = Procfile()
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for lineno, raw in enumerate(decode(data, filename), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if not m:
            problems.append(
                Problem(
                    f"{line[:60]!r} is not a 'type: command' line",
                    filename,
                    lineno,
                    hint="e.g. web: gunicorn app:app",
                )
            )
            continue
        name, command = m.group("name"), m.group("command").strip()
        if not _NAME.match(name):
            problems.append(
                Problem(
                    f"process type {name!r} may only contain letters, digits, '_' and '-'",
                    filename,
                    lineno,
                )
            )
            continue
        if not command:
            problems.append(Problem(f"process type {name!r} has no command", filename, lineno))
            continue
        if name in seen:
            problems.append(
                Problem(
                    f"process type {name!r} is declared again (first on line {seen[name]})",
                    filename,
                    lineno,
                    hint="keep one line per process type",
                )
            )
            continue
        seen[name] = lineno
        if name == RELEASE:
            result.release_command, result.release_line = command, lineno
            continue
        result.processes[name] = ProcessSpec(
            name=name,
            kind="command",
            command=command,
            web=name == "web",
            source=f"{filename}:{lineno}",
        )
    if problems:
        raise AppSpecError(problems)
    if not result.processes and result.release_command is None:
        raise AppSpecError(
            Problem("the Procfile declares no process types", filename, hint="e.g. web: ...")
        )
    return result
