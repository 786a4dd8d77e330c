"""image copies

Revision ID: 0012
Revises: 0011

The table of which hosts hold a verified copy of which image or static
bundle was `image_replicas`; "replica" now means only a controller replica,
so the table (and its index) take the name the code uses. Rows are kept.
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_image_replicas_host", table_name="image_replicas")
    op.rename_table("image_replicas", "image_copies")
    op.create_index("ix_image_copies_host", "image_copies", ["host_id"])


def downgrade() -> None:
    op.drop_index("ix_image_copies_host", table_name="image_copies")
    op.rename_table("image_copies", "image_replicas")
    op.create_index("ix_image_replicas_host", "image_replicas", ["host_id"])
