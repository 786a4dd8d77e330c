"""Checks that need the app's files: does what the config names exist?

Only existence, file modes and (for the entrypoint) a glance at the module's
source are looked at; nothing is imported or executed. A path is also taken
to exist when a [symlinks] entry creates it at deploy time. Missing things
the build may create (static directories filled by collectstatic) are
warnings; missing things nothing will create are errors.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import msgspec

from roost.appspec.epio import DJANGO_ENTRYPOINT
from roost.appspec.model import AppSpec, StaticMapping
from roost.appspec.reader import Diagnostics, split_source
from roost.appspec.values import dotted_name

DEFAULT_REQUIREMENTS = "requirements.txt"
# Read at most this much of a module when looking for the entrypoint's callable.
_MAX_SOURCE = 1 << 20


# The app directory may be an untrusted upload (the builder runs these checks):
# an unreadable path counts as missing rather than raising, and nothing is read
# through a symlink that leads out of the app.
def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:
        return False


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:
        return False


def inside(root: Path, path: Path) -> bool:
    """Whether `path`, symlinks followed, stays in `root`."""
    try:
        return path.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError):  # RuntimeError: symlink loop on older Pythons
        return False


def read_head(root: Path, path: Path, limit: int = _MAX_SOURCE) -> str | None:
    """The start of a file inside the app as text, or None."""
    if not inside(root, path):
        return None
    try:
        with path.open("rb") as fh:
            return fh.read(limit).decode("utf-8", errors="replace")
    except OSError:
        return None


class _AppDir:
    def __init__(self, spec: AppSpec, root: Path, lines: dict[str, int], diag: Diagnostics):
        self.spec = spec
        self.root = root
        self.lines = lines
        self.diag = diag
        self.file = spec.sources[0] if spec.sources else ""

    def error(self, message: str, key: str = "", hint: str = "") -> None:
        self.diag.error(message, self.file, self.lines.get(key, 0), hint)

    def warn(self, message: str, key: str = "", hint: str = "") -> None:
        self.diag.warn(message, self.file, self.lines.get(key, 0), hint)

    def exists(self, rel: str) -> bool:
        if _exists(self.root / rel):
            return True
        return any(rel == link or rel.startswith(link + "/") for link in self.spec.symlinks)

    def is_dir(self, rel: str) -> bool:
        return _is_dir(self.root / rel) or rel in self.spec.symlinks

    def module(self, module: str, roots: list[str]) -> Path | bool | None:
        """The module's source file, True if it exists without one we can read, or None."""
        parts = module.split(".")
        if parts[0] == self.spec.checkout_name and len(parts) > 1:
            # ep.io put the checkout's parent on sys.path: `import <checkout>.x` works.
            found = self.module(".".join(parts[1:]), ["."])
            if found:
                return found
        for base in roots:
            stem = "/".join(p for p in (base, *parts) if p != ".")
            for candidate in (f"{stem}.py", f"{stem}/__init__.py"):
                if _is_file(self.root / candidate):
                    return self.root / candidate
                if self.exists(candidate):
                    return True
            if self.is_dir(stem) or _is_file(self.root / f"{stem}.pyc"):
                return True
        return None

    def roots(self) -> list[str]:
        """Where imports are looked for, in sys.path order (runtime.environment)."""
        roots = list(self.spec.python_path)
        if self.spec.django is not None:
            roots.append(self.spec.django.base)
        roots.append(".")
        return list(dict.fromkeys(roots))


def _check_entrypoint(a: _AppDir) -> None:
    web = a.spec.processes.get("web")
    if web is None or web.kind != "wsgi" or web.entrypoint == DJANGO_ENTRYPOINT:
        return
    module, _, attr = web.entrypoint.partition(":")
    found = a.module(module, a.roots())
    if found is None:
        a.error(
            f"entrypoint module {module!r} is not in the app",
            "entrypoint",
            f"looked for {module.replace('.', '/')}.py in " + ", ".join(a.roots()),
        )
        return
    source = read_head(a.root, found) if isinstance(found, Path) else None
    if isinstance(found, Path) and source is not None:
        name = attr.split("(")[0].split(".")[0]
        if not re.search(rf"\b{re.escape(name)}\b", source):
            a.warn(
                f"{name!r} does not appear in {found.relative_to(a.root)}",
                "entrypoint",
                "check the spelling of the callable after ':'",
            )


def _check_django(a: _AppDir) -> None:
    django = a.spec.django
    if django is None:
        return
    if not a.is_dir(django.base):
        a.error(f"[django] base {django.base!r} is not a directory in the app", "django.base")
        return
    settings = a.spec.env.get("DJANGO_SETTINGS_MODULE", django.settings_module)
    if not dotted_name(settings):
        a.warn(f"DJANGO_SETTINGS_MODULE {settings!r} is not a Python module path")
        return
    if a.module(settings, a.roots()):
        return
    where = ", ".join(a.roots())
    web = a.spec.processes.get("web")
    if django.implied and web is not None and web.entrypoint == DJANGO_ENTRYPOINT:
        wsgi = a.module("wsgi", ["."])
        hint = (
            "set [wsgi] entrypoint = wsgi:application"
            if wsgi
            else "set [wsgi] entrypoint = module:callable, or [wsgi] enabled = false"
        )
        a.error(
            f"with no [wsgi] entrypoint Django serves the app, but its settings module "
            f"{settings!r} is not in the app (looked in {where})",
            "web",
            hint,
        )
    elif "DJANGO_SETTINGS_MODULE" in a.spec.env:
        a.warn(f"Django settings module {settings!r} is not in the app (looked in {where})")
    else:
        a.error(
            f"Django settings module {settings!r} is not in the app (looked in {where})",
            "django.base" if "django.base" in a.lines else "django",
            "set DJANGO_SETTINGS_MODULE in [env]",
        )


def _check_paths(a: _AppDir) -> None:
    spec = a.spec
    reported: set[str] = set()  # one error per missing directory
    if spec.celery is not None and spec.celery.djcelery and not a.is_dir(spec.celery.base):
        a.error(f"[celery] base {spec.celery.base!r} is not a directory in the app", "celery.base")
        reported.add(spec.celery.base)
    for proc in spec.processes.values():
        if proc.cwd not in reported and not a.is_dir(proc.cwd):
            reported.add(proc.cwd)
            file, line = split_source(proc.source)
            a.diag.error(f"process {proc.name!r}: cwd {proc.cwd!r} is not a directory", file, line)
    for entry in spec.python_path:
        if not a.is_dir(entry):
            a.warn(f"pythonpath entry {entry!r} is not a directory in the app", "pythonpath")
    for link, target in spec.symlinks.items():
        if not target.startswith("%(") and not a.exists(target):
            a.warn(
                f"symlink {link!r} points to {target!r}, which is not in the app", "symlink:" + link
            )
    for job in spec.cron:
        file, line = split_source(job.source)
        words = job.command.split()
        program = words[0] if words else ""
        if program.startswith("/") or not ("/" in program or program.endswith((".py", ".sh"))):
            continue
        homes = [program] + ([f"{spec.django.base}/{program}"] if spec.django else [])
        path = next((a.root / h for h in homes if _is_file(a.root / h)), None)
        if path is not None and not os.access(path, os.X_OK):
            a.diag.warn(
                f"cron: {program!r} is not executable, so it cannot be run as a command",
                file,
                line,
                f"chmod +x {program} (with a #! line), or write: python {program} ...",
            )
        elif path is None and "/" in program and not a.exists(program):
            a.diag.warn(f"cron: {program!r} is not in the app", file, line)


def _static(a: _AppDir) -> list[StaticMapping]:
    out = []
    for m in a.spec.static:
        if m.root == "app":
            target = a.root / m.path
            if not a.exists(m.path):
                a.warn(
                    f"static path {m.path!r} (for {m.url_prefix}) is not in the app",
                    "static:" + m.url_prefix,
                    "fine if the build creates it (collectstatic)",
                )
            elif _exists(target):
                m = msgspec.structs.replace(m, is_file=_is_file(target))
        out.append(m)
    return out


def _requirements(a: _AppDir) -> str | None:
    spec = a.spec
    if spec.requirements is not None:
        if not a.exists(spec.requirements):
            a.error(f"requirements file {spec.requirements!r} is not in the app", "requirements")
        return spec.requirements
    if _is_file(a.root / DEFAULT_REQUIREMENTS):
        return DEFAULT_REQUIREMENTS
    if spec.processes:
        a.warn(
            "no requirements file, so nothing will be installed",
            hint=f"add {DEFAULT_REQUIREMENTS} or set [wsgi] requirements",
        )
    return None


def inspect_app(spec: AppSpec, root: Path, lines: dict[str, int], diag: Diagnostics) -> AppSpec:
    """Check `spec` against the app directory; fill defaults only the files can give."""
    a = _AppDir(spec, root, lines, diag)
    requirements = _requirements(a)
    _check_entrypoint(a)
    _check_django(a)
    _check_paths(a)
    static = _static(a)
    return msgspec.structs.replace(
        spec,
        requirements=requirements,
        static=static,
        warnings=list(diag.warnings),
    )
