"""app ids are never reused

Revision ID: 0008
Revises: 0007

SQLite hands out max(id)+1 for an INTEGER PRIMARY KEY without AUTOINCREMENT,
so deleting the newest app and creating another gave the new app the old
one's id, and so the old one's tenant uid (roost.tenant.identity derives it
from the id). Recreating `apps` with AUTOINCREMENT would mean dropping a table
half the schema cascades from; instead the next id comes from a counter row
that only grows, seeded above every id handed out so far.
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "id_counters",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.Integer(), nullable=False),
    )
    # Above every app id in use now; an id freed before this migration may
    # already have been reused, which nothing can undo.
    op.execute(
        "INSERT INTO id_counters (name, value) SELECT 'apps', COALESCE(MAX(id), 0) FROM apps"
    )


def downgrade() -> None:
    op.drop_table("id_counters")
