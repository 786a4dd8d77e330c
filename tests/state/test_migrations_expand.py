"""Migrations expand, then contract (tests/state/schema_steps.py).

During a rolling upgrade the previous release's controllers keep working on
a database this release has migrated, so a migration that the previous
release did not ship may only add to the schema, unless it is a contract
step marked CONTRACT_AFTER with a release old enough. Every migration runs
on a real SQLite database and the schema's difference is what is judged.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from roost.state.db import MIGRATIONS
from tests.previous_release import CHANGELOG, files_at, previous_release, released_versions
from tests.state.schema_steps import Step, contract_changes, refusals, run_steps

VERSIONS = "src/roost/state/migrations/versions"


def test_migrations_new_since_the_previous_release_only_expand(tmp_path: Path) -> None:
    prev = previous_release()
    shipped = {f for f in files_at(prev.rev, VERSIONS) if f.endswith(".py")}
    steps = run_steps(MIGRATIONS, f"sqlite:///{tmp_path}/state.db")
    assert {s.filename for s in steps} >= shipped  # none of the shipped ones went
    released = released_versions(CHANGELOG.read_text())
    assert refusals(steps, shipped, prev.version, released) == []


def test_the_check_sees_what_the_history_did(tmp_path: Path) -> None:
    # The shipped history, judged the same way: what was contract then is seen.
    steps = {s.revision: s.changes for s in run_steps(MIGRATIONS, f"sqlite:///{tmp_path}/h.db")}
    assert steps["0012"] == ("drops table image_replicas",)  # a rename
    assert steps["0011"] and all(
        c.startswith("rewrites rows: UPDATE builds") for c in steps["0011"]
    )
    # A NOT NULL column with a server default, nullable columns, new tables: expansions.
    assert steps["0009"] == steps["0013"] == steps["0014"] == steps["0015"] == ()
    assert steps["0016"] == ()  # service_bindings.host, standby_host: defaulted


DROP = '''"""drop a column"""

from alembic import op

revision = "9001"
down_revision = "{head}"
branch_labels = None
depends_on = None
{marker}

def upgrade() -> None:
    with op.batch_alter_table("builds") as batch:
        batch.drop_column("moved_at")
    op.add_column("apps", __import__("sqlalchemy").Column("motto", __import__("sqlalchemy").Text()))


def downgrade() -> None:
    pass
'''


def _scratch(tmp_path: Path, marker: str) -> tuple[list[Step], set[str]]:
    """The real migrations plus one that drops a column, run on a scratch database."""
    where = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, where, ignore=shutil.ignore_patterns("__pycache__"))
    shipped = {p.name for p in (where / "versions").glob("*.py")}
    head = max(name.split("_")[0] for name in shipped)
    (where / "versions" / "9001_drop.py").write_text(DROP.format(head=head, marker=marker))
    return run_steps(where, f"sqlite:///{tmp_path}/scratch.db"), shipped


def test_a_migration_that_drops_a_column_is_refused_unless_a_contract_step(
    tmp_path: Path,
) -> None:
    steps, shipped = _scratch(tmp_path, "")
    assert steps[-1].changes == ("drops column builds.moved_at",)  # the added column is fine
    assert refusals(steps, shipped, "0.1.0", ["0.1.0"]) == [
        "9001_drop.py drops column builds.moved_at (not marked CONTRACT_AFTER)"
    ]


@pytest.mark.parametrize(
    ("after", "previous", "released", "refused"),
    [
        # 0.2.0 runs beside 0.1.0, which may still read the column.
        ("0.1.0", "0.1.0", ["0.1.0"], "is not older than 0.1.0"),
        ("0.2.0", "0.1.0", ["0.1.0"], "is no released version"),
        # 0.3.0 runs beside 0.2.0 only: what 0.1.0 alone used may go.
        ("0.1.0", "0.2.0", ["0.2.0", "0.1.0"], None),
    ],
)
def test_a_contract_step_names_a_release_older_than_the_one_beside_it(
    tmp_path: Path, after: str, previous: str, released: list[str], refused: str | None
) -> None:
    marker = f'# Safe once no host runs {after} or older.\nCONTRACT_AFTER = "{after}"\n'
    steps, shipped = _scratch(tmp_path, marker)
    assert steps[-1].contract_after == after
    got = refusals(steps, shipped, previous, released)
    if refused is None:
        assert got == []
    else:
        assert len(got) == 1 and refused in got[0]


def test_contract_changes_over_schemas_as_data() -> None:
    cols = {"id": ("INTEGER", False, None), "name": ("VARCHAR(64)", False, None)}
    before = {
        "apps": {"columns": cols, "indexes": {"ix_name": (("name",), False)}, "uniques": set()}
    }

    def with_(**kw: object) -> dict[str, dict[str, object]]:
        return {"apps": {**before["apps"], **kw}}

    assert contract_changes(before, before) == []
    grown = with_(columns={**cols, "memo": ("TEXT", True, None), "n": ("INTEGER", False, "0")})
    assert contract_changes(before, grown) == []
    assert contract_changes(before, {**before, "new": before["apps"]}) == []
    assert contract_changes(before, with_(columns={**cols, "n": ("INTEGER", False, None)})) == [
        "adds apps.n NOT NULL without a server default"
    ]
    assert contract_changes(before, with_(columns={**cols, "name": ("TEXT", True, None)})) == [
        "changes apps.name from VARCHAR(64) to TEXT",
        "makes apps.name nullable",
    ]
    assert contract_changes(before, with_(indexes={})) == ["drops index ix_name on apps"]
    assert contract_changes(before, with_(uniques={("name",)})) == [
        "adds a unique constraint on apps('name',)"
    ]
    assert contract_changes(before, {}) == ["drops table apps"]
