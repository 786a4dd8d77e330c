"""builds.moved_at

Revision ID: 0015
Revises: 0014

When a deploy entered its stage (wall clock, written with every move): a
deploy stuck in a stage past that stage's limit (its controller stopped
mid-stage, and nothing resumes it) is failed when a later deploy of the
app waits behind it (`deployflow.stalled`). Older rows keep NULL: their
creation time stands in.
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("builds") as batch:
        batch.add_column(sa.Column("moved_at", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("builds") as batch:
        batch.drop_column("moved_at")
