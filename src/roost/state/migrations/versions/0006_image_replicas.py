"""image replicas

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "image_replicas",
        sa.Column("digest", sa.String(length=71), nullable=False),
        sa.Column("host_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("digest", "host_id"),
    )
    op.create_index("ix_image_replicas_host", "image_replicas", ["host_id"])


def downgrade() -> None:
    op.drop_index("ix_image_replicas_host", table_name="image_replicas")
    op.drop_table("image_replicas")
