"""App configuration (epio.ini, Procfile, app.json) -> AppSpec.

Pure: no I/O beyond reading the files.

Public API:
    load_app(app_dir) -> AppSpec           the builder's entry point (raises AppSpecError)
    load_file(path) -> AppSpec             one epio.ini, Procfile or app.json on its own
    check_app / check_file / check_path    the same, as a CheckReport (never raise)
    parse_epio(text) / parse_procfile_spec(text) -> AppSpec   pure, from file contents
"""

from roost.appspec.check import CheckReport, check_app, check_file, check_path
from roost.appspec.errors import AppSpecError, Problem
from roost.appspec.load import load_app, load_file, parse_epio, parse_procfile_spec
from roost.appspec.model import AppSpec, ConfigWarning, ProcessSpec

__all__ = [
    "AppSpec",
    "AppSpecError",
    "CheckReport",
    "ConfigWarning",
    "Problem",
    "ProcessSpec",
    "check_app",
    "check_file",
    "check_path",
    "load_app",
    "load_file",
    "parse_epio",
    "parse_procfile_spec",
]
