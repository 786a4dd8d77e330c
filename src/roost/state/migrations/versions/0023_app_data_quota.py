"""app_data_quota

Revision ID: 0023
Revises: 0022

Each app's own size for its data directory (issue 17: `roost data quota`),
in MiB; NULL keeps the platform's ROOST_DATA_QUOTA_MB. Expand only: a
nullable column, so release 0.2.0's controllers, which neither read nor
write it, keep working beside this one (their inserts leave it NULL).
"""

import sqlalchemy as sa
from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("apps") as batch:
        batch.add_column(sa.Column("data_quota_mb", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("apps") as batch:
        batch.drop_column("data_quota_mb")
