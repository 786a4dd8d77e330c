"""What an SSH client asked the gateway to do, parsed strictly (pure).

Accepted exec requests (anything else is refused with a usage message):

  git-receive-pack 'APP'             `git push` (also '/APP', 'APP.git')
  git-upload-pack 'APP'              `git clone`/`fetch` from the gateway's cache
  run APP [CMD...]                   CMD in the app's release environment
  epio_command APP [CMD...]          the same, as ep.io's client spells it
  django APP COMMAND...              django-admin COMMAND (manage.py when present)
  rsync --server [--sender] OPTS . APP/PATH...
  scp -t|-f [-r] [-p] [-d] [-v] APP/PATH

As with sshd, the part after `run APP` is a shell command line: it is passed
on as written, to be interpreted by a shell on the runner. Paths of rsync and
scp name the app first; the rest is relative to its data directory and may
not climb out of it (no `..`, nothing absolute).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from typing import Literal

APP = re.compile(r"^[a-z0-9_-]{1,48}$")
_RUN = re.compile(
    r"^\s*(run|epio_command|django)\s+(['\"]?)([A-Za-z0-9_.-]+)\2(?:\s+(.*?))?\s*$", re.S
)
_SCP_FLAGS = {"-t", "-f", "-r", "-p", "-d", "-v", "-q"}

USAGE = """\
This is a Roost gateway. It understands:
  git push ssh://HOST/APP main          deploy (also HOST:APP, branch master)
  ssh -t HOST run APP [COMMAND...]      run a command in the app's environment
  ssh -t HOST django APP COMMAND...     django-admin COMMAND
  rsync -av DIR HOST:APP/PATH           the app's data directory (and back)
  scp FILE HOST:APP/PATH                the same, one file
"""


class CommandError(ValueError):
    """The request is not one the gateway accepts (the message says why)."""


@dataclass(frozen=True)
class GitCommand:
    service: Literal["receive-pack", "upload-pack"]
    app: str


@dataclass(frozen=True)
class RunCommand:
    app: str
    command: str
    kind: Literal["shell", "django"] = "shell"


@dataclass(frozen=True)
class DataCommand:
    app: str
    tool: Literal["rsync", "scp"]
    options: list[str] = field(default_factory=list)
    # Relative to the app's data directory ("" for the directory itself).
    paths: list[str] = field(default_factory=list)

    @property
    def writes(self) -> bool:
        if self.tool == "rsync":
            return "--sender" not in self.options
        return "-t" in self.options


Command = GitCommand | RunCommand | DataCommand


def parse(command: str) -> Command:
    text = command.strip()
    if not text:
        raise CommandError("no command given\n\n" + USAGE)
    head = text.split(None, 1)[0]
    if head in ("git-receive-pack", "git-upload-pack", "git"):
        return _git(text)
    if head in ("run", "epio_command", "django"):
        return _run(text)
    if head == "rsync":
        return _rsync(_split(text))
    if head == "scp":
        return _scp(text)
    raise CommandError(f"unknown command {head!r}\n\n" + USAGE)


def _split(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise CommandError(f"cannot parse the command line: {exc}") from None


def repo_app(path: str) -> str:
    """The app a git path names: 'app', '/app', 'app.git', '~/app/'."""
    name = path.strip().removeprefix("~").strip("/")
    name = name.removesuffix(".git")
    if not APP.match(name):
        raise CommandError(f"{path!r} is not an app name (git push ssh://HOST/APP main)")
    return name


def _git(text: str) -> GitCommand:
    words = _split(text)
    if words[0] == "git" and len(words) > 1:
        words = [f"git-{words[1]}", *words[2:]]
    if len(words) != 2:
        raise CommandError("git sent an unexpected command line")
    service = words[0].removeprefix("git-")
    if service not in ("receive-pack", "upload-pack"):
        raise CommandError(f"git {service} is not supported")
    return GitCommand(service=service, app=repo_app(words[1]))  # type: ignore[arg-type]


def _run(text: str) -> RunCommand:
    m = _RUN.match(text)
    if not m:
        raise CommandError("usage: run APP [COMMAND...]\n\n" + USAGE)
    verb, app, rest = m.group(1), m.group(3), m.group(4) or ""
    if not APP.match(app):
        raise CommandError(f"{app!r} is not an app name")
    if verb == "django":
        if not rest:
            raise CommandError("usage: django APP COMMAND... (e.g. django APP migrate)")
        return RunCommand(app=app, command=rest, kind="django")
    return RunCommand(app=app, command=rest)


def split_app_path(path: str) -> tuple[str, str]:
    """'APP/dir/file' -> ('APP', 'dir/file'); a trailing slash is kept."""
    if "\x00" in path:
        raise CommandError("a path cannot contain NUL")
    body = path.lstrip("/")  # HOST:/APP/x is accepted like HOST:APP/x
    app, _, rest = body.partition("/")
    if not APP.match(app):
        raise CommandError(
            f"{path!r}: paths start with the app's name (HOST:APP/path in its data directory)"
        )
    parts = rest.split("/")
    if ".." in parts:
        raise CommandError(f"{path!r} leaves the app's data directory")
    return app, rest


def _one_app(paths: list[str]) -> tuple[str, list[str]]:
    if not paths:
        raise CommandError("no path given (HOST:APP/path)")
    split = [split_app_path(p) for p in paths]
    apps = {a for a, _ in split}
    if len(apps) != 1:
        raise CommandError("all paths must be in the same app")
    return split[0][0], [rel for _, rel in split]


def _rsync(words: list[str]) -> DataCommand:
    if len(words) < 3 or words[1] != "--server":
        raise CommandError("only rsync's own server command is accepted (rsync ... HOST:APP/path)")
    try:
        dot = words.index(".", 2)
    except ValueError:
        raise CommandError("rsync sent an unexpected command line") from None
    options = words[2:dot]
    if any(not o.startswith("-") for o in options):
        raise CommandError("rsync sent an unexpected command line")
    app, paths = _one_app(words[dot + 1 :])
    return DataCommand(app=app, tool="rsync", options=options, paths=paths)


def _scp(text: str) -> DataCommand:
    words = _split(text)
    options: list[str] = []
    i = 1
    while i < len(words) and words[i].startswith("-"):
        if words[i] == "--":
            i += 1
            break
        if words[i] not in _SCP_FLAGS:
            raise CommandError(f"scp option {words[i]!r} is not supported")
        options.append(words[i])
        i += 1
    if ("-t" in options) == ("-f" in options):
        raise CommandError("only scp's own server command is accepted (scp FILE HOST:APP/path)")
    rest = words[i:]
    if len(rest) > 1:
        # Legacy scp sends the path unquoted: "a b" arrives as two words.
        rest = [" ".join(rest)]
    app, paths = _one_app(rest)
    return DataCommand(app=app, tool="scp", options=options, paths=paths)
