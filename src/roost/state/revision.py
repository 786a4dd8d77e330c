"""The state database's schema revision and this Roost's newest, without Alembic.

A controller asks both at every start (roost.controller.upgrade) and needs
Alembic only when they differ. Alembic, with Mako and its dialect modules,
is ~12 MB resident once imported and stays for the life of the process
(issue 21), so the question is answered here from the migration files' own
`revision`/`down_revision` literals and the `alembic_version` table, and the
migration itself runs in a child process (roost.state.migrator).
"""

from __future__ import annotations

import ast
from pathlib import Path

from sqlalchemy import Connection, inspect, text

VERSIONS = Path(__file__).with_name("migrations") / "versions"


def head_revision(versions: Path = VERSIONS) -> str:
    """The one revision no other revises: what `alembic upgrade head` reaches.

    ValueError when the files do not make one chain with one head (Alembic
    would refuse them too)."""
    revises: dict[str, str | None] = {}
    for path in sorted(versions.glob("*.py")):
        found = _literals(path)
        if "revision" not in found:
            continue
        rev = found["revision"]
        if not isinstance(rev, str):
            raise ValueError(f"{path.name}: revision is not a string")
        down = found.get("down_revision")
        if down is not None and not isinstance(down, str):
            raise ValueError(f"{path.name}: down_revision is not one revision")
        revises[rev] = down
    heads = set(revises) - {d for d in revises.values() if d is not None}
    if len(heads) != 1:
        raise ValueError(f"the migrations have {len(heads)} heads: {sorted(heads)}")
    return heads.pop()


def _literals(path: Path) -> dict[str, object]:
    """The module-level `name = <literal>` assignments of a migration file."""
    out: dict[str, object] = {}
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if node.value is None:
                continue
            for target in targets:
                if isinstance(target, ast.Name):
                    try:
                        out[target.id] = ast.literal_eval(node.value)
                    except ValueError:
                        pass
    return out


def current_revision(conn: Connection) -> str:
    """The database's revision, "" when it has none (a new database)."""
    if not inspect(conn).has_table("alembic_version"):
        return ""
    rows = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    if len(rows) > 1:
        # Branches: Alembic's business; never mistaken for the head.
        return ",".join(sorted(rows))
    return rows[0] if rows else ""
