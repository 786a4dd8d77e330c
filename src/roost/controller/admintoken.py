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

from pathlib import Path

from roost.privatefile import replace_private

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
    replace_private(admin_token_path(data), token + "\n")
