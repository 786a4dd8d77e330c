"""The build's check step: import a WSGI entrypoint ("module:attr") in the
built virtualenv, as the app's build user, from the process's directory.

Copied into the build and run as a script by the venv's interpreter (never
imported by Roost)."""

from __future__ import annotations

import importlib
import sys


def main(target: str) -> None:
    module, _, attr = target.partition(":")
    sys.path.insert(0, ".")
    obj = importlib.import_module(module)
    if attr and "(" not in attr:
        for part in attr.split("."):
            obj = getattr(obj, part)
        if not callable(obj):
            raise SystemExit(f"{target} is not callable")
    print(f"{target}: imports")


if __name__ == "__main__":
    main(sys.argv[1])
