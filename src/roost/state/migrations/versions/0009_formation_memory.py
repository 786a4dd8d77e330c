"""formation memory per process type

Revision ID: 0009
Revises: 0008

`roost scale web=2:512M`: each process type's instances may have their own
memory size (their cgroup's limit, and what placement reserves); 0 is the
platform's default (ROOST_INSTANCE_MEMORY_MB).
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "formation", sa.Column("memory_mb", sa.Integer(), nullable=False, server_default="0")
    )


def downgrade() -> None:
    with op.batch_alter_table("formation") as batch:
        batch.drop_column("memory_mb")
