"""`python -m roost.state.migrator`: bring the state database to the newest
schema, in a process of its own.

The controller runs this instead of migrating in itself: Alembic imported
once stays resident for the controller's whole life (~12 MB, issue 21), and
it is needed only at a first start or an upgrade. The database's URL comes in
the environment (ROOST_MIGRATE_URL), never on the command line, where any
user could read its password.
"""

from __future__ import annotations

import os
import sys

from roost.state.db import migrate

URL_ENV = "ROOST_MIGRATE_URL"


def main() -> None:
    url = os.environ.get(URL_ENV, "")
    if not url:
        raise SystemExit(f"usage: {URL_ENV}=URL python -m roost.state.migrator")
    try:
        migrate(url)
    except Exception as exc:
        # The caller reports it; its last line is all it keeps.
        print(f"{type(exc).__name__}: {exc}".replace("\n", " "), file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
