"""Expand-then-contract, checked: what each migration does to a real schema.

Each migration is run on a scratch SQLite database, one revision at a time,
and the schema is read before and after (`snapshot`: tables, columns with
their type, nullability and server default, indexes, unique constraints).
`contract_changes` (pure) lists what in the difference an older release's
code could trip on: a table or column gone (a rename is one gone and one
new), a column's type or nullability changed, a new NOT NULL column without
a server default (the older code's INSERTs lack it), an index gone, a
uniqueness added to a table that existed; and (`run_steps`) rows rewritten
by UPDATE or DELETE, whose old values older code may still look for. Adding tables, nullable or
defaulted columns and indexes is an expansion.

A migration that must contract says so: `CONTRACT_AFTER = "X.Y.Z"` at module
level names the release after which it is safe (no host runs X.Y.Z or
older). `refusals` (pure) allows that only when X.Y.Z is released and older
than the previous release: this release runs beside the previous one during
a rolling upgrade, and that one may still use what is removed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

# table -> {"columns": {name: (type, nullable, default)}, "indexes": {name: (cols, unique)},
#           "uniques": {cols}}
Schema = dict[str, dict[str, Any]]


def snapshot(engine: sa.Engine) -> Schema:
    insp = sa.inspect(engine)
    out: Schema = {}
    for table in insp.get_table_names():
        if table == "alembic_version":
            continue
        out[table] = {
            "columns": {
                c["name"]: (str(c["type"]), bool(c["nullable"]), c.get("default"))
                for c in insp.get_columns(table)
            },
            "indexes": {
                i["name"]: (tuple(i["column_names"]), bool(i["unique"]))
                for i in insp.get_indexes(table)
            },
            "uniques": {tuple(u["column_names"]) for u in insp.get_unique_constraints(table)},
        }
    return out


def contract_changes(before: Schema, after: Schema) -> list[str]:
    """What in going from `before` to `after` is not an expansion (pure)."""
    out: list[str] = []
    for table, old in before.items():
        new = after.get(table)
        if new is None:
            out.append(f"drops table {table}")
            continue
        for col, (typ, nullable, default) in old["columns"].items():
            if col not in new["columns"]:
                out.append(f"drops column {table}.{col}")
                continue
            ntyp, nnullable, ndefault = new["columns"][col]
            if ntyp != typ:
                out.append(f"changes {table}.{col} from {typ} to {ntyp}")
            if nullable != nnullable:
                out.append(f"makes {table}.{col} {'nullable' if nnullable else 'NOT NULL'}")
            if default is not None and ndefault != default:
                out.append(f"changes {table}.{col}'s server default")
        for col, (_, nullable, default) in new["columns"].items():
            if col not in old["columns"] and not nullable and default is None:
                out.append(f"adds {table}.{col} NOT NULL without a server default")
        for name, (cols, unique) in old["indexes"].items():
            if new["indexes"].get(name) != (cols, unique):
                out.append(f"drops index {name} on {table}")
        for name, (cols, unique) in new["indexes"].items():
            if unique and name not in old["indexes"]:
                out.append(f"adds unique index {name} on {table}{cols}")
        for cols in new["uniques"] - old["uniques"]:
            out.append(f"adds a unique constraint on {table}{cols}")
    return out


@dataclass(frozen=True)
class Step:
    revision: str
    filename: str
    changes: tuple[str, ...]  # contract changes seen (none: it only expands)
    contract_after: str | None  # its CONTRACT_AFTER, if it declares one


def run_steps(script_location: Path, url: str) -> list[Step]:
    """Every migration in order, each run on the database at `url` (empty)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(script_location))
    cfg.set_main_option("sqlalchemy.url", url)
    scripts = list(reversed(list(ScriptDirectory.from_config(cfg).walk_revisions())))
    engine = sa.create_engine(url)
    # Rows rewritten (UPDATE, DELETE): invisible in the schema, yet older
    # code may read the values a migration took away. Seen on every engine,
    # Alembic's own included; its bookkeeping table aside.
    rewrites: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        words = statement.split()
        if words and words[0].upper() in ("UPDATE", "DELETE") and "alembic_version" not in words:
            rewrites.append(" ".join(words[:4]))

    steps: list[Step] = []
    sa.event.listen(sa.Engine, "before_cursor_execute", seen)
    try:
        before = snapshot(engine)
        for script in scripts:
            rewrites.clear()
            command.upgrade(cfg, script.revision)
            engine.dispose()  # the next read sees what Alembic's own connection wrote
            after = snapshot(engine)
            changes = contract_changes(before, after) + [f"rewrites rows: {r}" for r in rewrites]
            steps.append(
                Step(
                    revision=script.revision,
                    filename=Path(str(script.path)).name,
                    changes=tuple(changes),
                    contract_after=getattr(script.module, "CONTRACT_AFTER", None),
                )
            )
            before = after
    finally:
        sa.event.remove(sa.Engine, "before_cursor_execute", seen)
        engine.dispose()
    return steps


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


def refusals(
    steps: list[Step], released_files: set[str], previous: str, released: list[str]
) -> list[str]:
    """Why the migrations new since the previous release may not ship (pure)."""
    out = []
    for step in steps:
        if step.filename in released_files:
            continue  # shipped already: history, whatever it did
        if step.contract_after is None:
            out += [f"{step.filename} {c} (not marked CONTRACT_AFTER)" for c in step.changes]
            continue
        after = step.contract_after
        if after not in released:
            out.append(f"{step.filename}: CONTRACT_AFTER {after!r} is no released version")
        elif version_key(after) >= version_key(previous):
            out.append(
                f"{step.filename}: CONTRACT_AFTER {after} is not older than {previous}, "
                "which runs beside this release during an upgrade"
            )
    return out
