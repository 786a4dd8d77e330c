"""Read an app's configuration into an AppSpec, or raise AppSpecError saying why not.

`load_app` is what the builder calls: the same checks as `roost check`, and a
spec only for an app that can be deployed. Warnings travel in
`AppSpec.warnings`.
"""

from __future__ import annotations

from pathlib import Path

from roost.appspec.check import CheckReport, check_app, check_file
from roost.appspec.compose import compose
from roost.appspec.errors import AppSpecError, Problem
from roost.appspec.model import AppSpec


def _spec_or_raise(report: CheckReport) -> AppSpec:
    if report.errors:
        raise AppSpecError(report.errors)
    if report.spec is None:  # pragma: no cover - every failure records an error
        raise AppSpecError(Problem(f"{report.path}: no configuration"))
    return report.spec


def load_app(app_dir: Path) -> AppSpec:
    """The spec of the app in `app_dir` (epio.ini and/or Procfile)."""
    return _spec_or_raise(check_app(app_dir))


def load_file(path: Path) -> AppSpec:
    """The spec one epio.ini or Procfile describes, without looking at the app's files."""
    return _spec_or_raise(check_file(path))


def parse_epio(data: bytes | str, filename: str = "epio.ini") -> AppSpec:
    """The spec an epio.ini's contents describe (pure)."""
    composed = compose(epio=data, epio_name=filename)
    return _spec_or_raise(
        CheckReport(path=filename, spec=composed.spec, errors=composed.diag.errors)
    )


def parse_procfile_spec(data: bytes | str, filename: str = "Procfile") -> AppSpec:
    """The spec a Procfile's contents describe (pure)."""
    composed = compose(procfile=data, procfile_name=filename)
    return _spec_or_raise(
        CheckReport(path=filename, spec=composed.spec, errors=composed.diag.errors)
    )
