"""releases.promoted_at

Revision ID: 0013
Revises: 0012

When a release went live (wall clock, written with its move to `active`):
a release that crash-loops within the rollback window after that is rolled
back by itself (`controller/aftercare.py`). Older rows keep NULL: a release
promoted before this revision is past any window.
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("releases") as batch:
        batch.add_column(sa.Column("promoted_at", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("releases") as batch:
        batch.drop_column("promoted_at")
