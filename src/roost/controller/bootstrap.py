"""The operator's way in: an admin account and an API token, straight from the state database.

This is the controller package's public entry point for bootstrapping, used by
`roost up` (the local admin) and `roost cluster admin-token` on a host that
joined a cluster: before any controller answers, someone needs a token to
talk to one. The CLI calls this instead of reaching into the controller's store.
"""

from __future__ import annotations

from roost.controller.store import Conflict, Store
from roost.state.db import make_engine, migrate


class NotAdmin(Exception):
    pass


def issue_admin_token(state_url: str, email: str, token_name: str, reuse: str = "") -> str:
    """A token of admin account `email` (created if missing); `reuse` when still valid.

    Brings the schema up to date first. Raises NotAdmin when the account exists
    without admin rights; driver errors propagate.
    """
    migrate(state_url)
    store = Store(make_engine(state_url))
    try:
        if reuse and store.account_for_token(reuse) is not None:
            return reuse
        row = store.account_by_email(email)
        if row is None:
            try:
                account_id = store.create_account(email, is_admin=True)
            except Conflict:  # another host created it just now
                account_id = store.account_by_email(email).id
        elif not row.is_admin:
            raise NotAdmin(f"account {email} exists and is not an admin")
        else:
            account_id = row.id
        return store.issue_token(account_id, name=token_name)
    finally:
        store.engine.dispose()
