"""The sample app (examples/hello) copied for a test, with services declared."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.conftest import REPO

HELLO = REPO / "examples" / "hello"
SERVICES = ("postgres", "redis")


def hello_app(dest: Path, *services: str) -> Path:
    """A copy of examples/hello at `dest` whose epio.ini asks for `services`
    (postgres, redis); `dest` itself."""
    unknown = sorted(set(services) - set(SERVICES))
    if unknown:
        raise ValueError(f"no such service: {', '.join(unknown)} (known: {', '.join(SERVICES)})")
    shutil.copytree(HELLO, dest)
    if services:
        with open(dest / "epio.ini", "a") as ini:
            ini.write("\n[services]\n" + "".join(f"{s} = true\n" for s in services))
    return dest
