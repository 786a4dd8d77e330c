"""App configuration (epio.ini, Procfile) -> AppSpec. Pure: no I/O beyond reading the files."""

from roost.appspec.errors import AppSpecError, Problem
from roost.appspec.load import load_app
from roost.appspec.model import AppSpec, ProcessSpec

__all__ = ["AppSpec", "AppSpecError", "Problem", "ProcessSpec", "load_app"]
