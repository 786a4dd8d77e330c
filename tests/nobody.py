"""What an unprivileged local user can read: the attacker of the private-files tests.

The attempt runs in a child process that has become `nobody` (no groups), using
the system's python (the virtualenv's interpreter may sit under a directory
nobody cannot enter). Each test places a file nobody *can* read beside the
private ones, so a refusal means the mode refused it, not that the directory
was out of reach.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
from collections.abc import Iterable
from pathlib import Path

SYSTEM_PYTHON = "/usr/bin/python3"

_TRY = """
import json, os, sys
out = {}
for p in sys.argv[1:]:
    try:
        if os.path.isdir(p):
            os.listdir(p)
        else:
            with open(p, "rb") as fh:
                fh.read(1)
        out[p] = "read"
    except OSError as exc:
        out[p] = type(exc).__name__
print(json.dumps(out))
"""


def nobody_reads(paths: Iterable[Path]) -> dict[Path, str]:
    """path -> "read" when nobody could read it (a directory: list it), else the error."""
    assert os.geteuid() == 0, "these tests act as another user: run them as root"
    assert os.path.exists(SYSTEM_PYTHON), f"{SYSTEM_PYTHON} is needed to act as nobody"
    who = pwd.getpwnam("nobody")
    wanted = [str(p) for p in paths]
    done = subprocess.run(
        [SYSTEM_PYTHON, "-I", "-S", "-c", _TRY, *wanted],
        user=who.pw_uid,
        group=who.pw_gid,
        extra_groups=[],
        cwd="/",
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    got = json.loads(done.stdout)
    return {Path(p): got[p] for p in wanted}


def readable_control(directory: Path) -> Path:
    """A file in `directory` everyone may read, to prove nobody reaches the directory."""
    path = directory / "control.txt"
    path.write_text("anyone may read this\n")
    os.chmod(path, 0o644)
    return path
