"""The admin account and its token, made by the controller at its start.

Before any controller answers, an operator needs a token to talk to one.
The state database is the controller's alone (an import-linter contract), so
the controller makes both: the admin account `admin@localhost` (once, by
whichever controller of a cluster starts first) and, on each controller's
host, a token of it in DATA/controller/admin.token (`roost.controller.
admintoken`), kept while it works and replaced when revoked or lost. The CLI
reads that file; it never opens the state database.
"""

from __future__ import annotations

from pathlib import Path

from roost.controller.admintoken import (
    ADMIN_EMAIL,
    read_admin_token,
    write_admin_token,
)
from roost.controller.store import Conflict, Store


class NotAdmin(Exception):
    pass


def admin_account(store: Store, email: str = ADMIN_EMAIL) -> int:
    """The id of admin account `email`, created if missing.

    Raises NotAdmin when the account exists without admin rights: a
    registered user's account is never promoted by a restart.
    """
    row = store.account_by_email(email)
    if row is None:
        try:
            return store.create_account(email, is_admin=True)
        except Conflict:  # another controller created it just now
            row = store.account_by_email(email)
    if not row.is_admin:
        raise NotAdmin(f"account {email} exists and is not an admin")
    return int(row.id)


def bootstrap_admin(store: Store, data: Path, controller: str) -> str:
    """The admin's token in DATA's token file: the one there while it works, else a new one."""
    account_id = admin_account(store)
    old = read_admin_token(data)
    if old:
        row = store.account_for_token(old)
        if row is not None and row.id == account_id:
            return old
    token = store.issue_token(account_id, name=f"admin token of controller {controller}")
    write_admin_token(data, token)
    return token
