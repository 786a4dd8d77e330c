"""The operator's way in: the admin's API token in DATA/controller/admin.token.

Only the controller reaches the state database, so only the controller makes
the admin account and its token (`roost.controller.bootstrap`, at every
start, before its API listens: a client that saw the API answer finds the
file). The CLI only reads the file: `roost up` names it in DATA/api.json,
and `roost cluster admin-token` prints it on a controller's host. This
module touches no database on purpose, so that the CLI may import it.

The file is the DATA owner's alone (0600 in the controller's 0700
directory): whoever can read it could also read the state database itself.
"""

from __future__ import annotations

import os
from pathlib import Path

ADMIN_EMAIL = "admin@localhost"
TOKEN_FILE = Path("controller") / "admin.token"


def admin_token_path(data: Path) -> Path:
    return data / TOKEN_FILE


def read_admin_token(data: Path) -> str:
    """The token the controller wrote, or "" before its first start."""
    try:
        return admin_token_path(data).read_text().strip()
    except FileNotFoundError:
        return ""


def write_admin_token(data: Path, token: str) -> None:
    """Replace the file at once: a reader sees the old token or the new one."""
    path = admin_token_path(data)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    # A leftover temporary file keeps its mode through O_CREAT: set it.
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    os.replace(tmp, path)
