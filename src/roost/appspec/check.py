"""`roost check`, the builder and `roost deploy`: is this app deployable, and what will run?

`check_app` reads an app directory's epio.ini and/or Procfile (and app.json
when there is one), maps them to an
AppSpec and checks it against the app's files; `check_file` checks one
configuration file on its own. Neither raises for a user mistake: every
problem is in the report.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from roost.appspec import python_version as pv
from roost.appspec.appdir import inside, inspect_app, read_head
from roost.appspec.appjson import APP_JSON
from roost.appspec.compose import compose
from roost.appspec.errors import Problem
from roost.appspec.model import AppSpec, ConfigWarning
from roost.appspec.reader import Diagnostics

EPIO_INI = "epio.ini"
PROCFILE = "Procfile"
# No real config comes near this; refusing bigger files keeps a stray upload cheap.
MAX_CONFIG_BYTES = 1 << 20


class CheckReport(msgspec.Struct, kw_only=True):
    """The outcome of a check. `spec` is None when a file could not be parsed."""

    path: str
    files: list[str] = []
    spec: AppSpec | None = None
    errors: list[Problem] = []
    warnings: list[ConfigWarning] = []

    @property
    def ok(self) -> bool:
        """Deployable: everything parsed and nothing is an error."""
        return self.spec is not None and not self.errors


def _read(path: Path, diag: Diagnostics) -> bytes | None:
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        diag.error(f"cannot read {path.name}: {exc.strerror or exc}", path.name)
        return None
    if len(data) > MAX_CONFIG_BYTES:
        diag.error(f"{path.name} is larger than {MAX_CONFIG_BYTES} bytes", path.name)
        return None
    return data


def is_procfile(path: Path) -> bool:
    return path.name == PROCFILE or path.name.startswith(PROCFILE + ".")


def _report(path: Path, files: list[str], spec: AppSpec | None, diag: Diagnostics) -> CheckReport:
    return CheckReport(
        path=str(path), files=files, spec=spec, errors=diag.errors, warnings=diag.warnings
    )


def check_file(path: Path) -> CheckReport:
    """Check one epio.ini (any name), Procfile or app.json on its own, without the app's files."""
    path = Path(path)
    diag = Diagnostics()
    data = _read(path, diag)
    if data is None:
        return _report(path, [], None, diag)
    if path.name == APP_JSON:
        composed = compose(app_json=data)
    elif is_procfile(path):
        composed = compose(procfile=data, procfile_name=path.name)
    else:
        composed = compose(epio=data, epio_name=path.name)
    diag.extend(composed.diag)
    return _report(path, [path.name], composed.spec, diag)


def check_app(app_dir: Path) -> CheckReport:
    """Check an app directory: its config and that the files the config names exist."""
    root = Path(app_dir)
    diag = Diagnostics()
    if not root.is_dir():
        diag.error(f"{root} is not a directory")
        return _report(root, [], None, diag)
    ini, procfile, app_json = root / EPIO_INI, root / PROCFILE, root / APP_JSON
    files = [p.name for p in (ini, procfile, app_json) if p.is_file()]
    if not (ini.is_file() or procfile.is_file()):
        diag.error(
            f"{root} has neither {EPIO_INI} nor {PROCFILE}",
            hint="an app tells Roost how to run it with one of them (or both); "
            f"{APP_JSON} adds health checks, scripts and cron jobs to them",
        )
        return _report(root, files, None, diag)
    for path in (ini, procfile, app_json):
        if path.name in files and not inside(root, path):
            diag.error(f"{path.name} is a symlink that leads out of the app", path.name)
    if diag.errors:
        return _report(root, files, None, diag)
    epio_data = _read(ini, diag) if ini.name in files else None
    procfile_data = _read(procfile, diag) if procfile.name in files else None
    app_json_data = _read(app_json, diag) if app_json.name in files else None
    if diag.errors:
        return _report(root, files, None, diag)
    composed = compose(epio_data, procfile_data, app_json_data)
    diag.extend(composed.diag)
    spec = composed.spec
    if spec is not None:
        spec = inspect_app(spec, root, composed.lines, diag)
        spec = _python(spec, root, diag)
    return _report(root, files, spec, diag)


def _python(spec: AppSpec, root: Path, diag: Diagnostics) -> AppSpec:
    """The Python version the app's files ask for (roost.appspec.python_version)."""
    texts: dict[str, str] = {}
    for name in (pv.PYTHON_VERSION_FILE, pv.RUNTIME_TXT):
        if (root / name).is_file():
            text = read_head(root, root / name, pv.MAX_FILE_BYTES)
            if text is not None:
                texts[name] = text
    version, source = pv.request_from_files(texts, spec.python_version, diag)
    return msgspec.structs.replace(
        spec, python_version=version, python_source=source, warnings=list(diag.warnings)
    )


def check_path(path: Path) -> CheckReport:
    """A directory is checked as an app, anything else as a single config file."""
    path = Path(path)
    if path.is_dir():
        return check_app(path)
    if not path.exists():
        diag = Diagnostics()
        diag.error(f"{path} does not exist")
        return _report(path, [], None, diag)
    return check_file(path)
