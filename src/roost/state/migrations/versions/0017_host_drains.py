"""host_drains

Revision ID: 0017
Revises: 0016

Hosts an operator drained (`roost hosts drain`): no new placements, their
instances moved elsewhere make-before-break (controller/hostdrain.py). A
new table: older controllers neither read nor write it.
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "host_drains",
        sa.Column("host_id", sa.String(64), primary_key=True),
        sa.Column("since", sa.Float(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False, server_default=""),
    )


def downgrade() -> None:
    op.drop_table("host_drains")
