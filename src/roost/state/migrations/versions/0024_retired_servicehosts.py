"""retired_servicehosts

Revision ID: 0024
Revises: 0023

Servicehosts replaced for good (issue 16: `roost servicehost replace OLD
NEW`, or a spare taking a lost one's place): the controllers no longer
survey or list them, tell every servicehost to stop asking their sentinels,
and refuse their status pushes should they come back. Expand only: a new
table, which release 0.2.0's controllers never read.
"""

import sqlalchemy as sa
from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "retired_servicehosts",
        sa.Column("host", sa.String(255), primary_key=True),
        sa.Column("address", sa.String(255), nullable=False),
        sa.Column("replaced_by", sa.String(255), nullable=False),
        sa.Column("retired_at", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("retired_servicehosts")
