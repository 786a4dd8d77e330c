"""log_drains

Revision ID: 0019
Revises: 0018

Log drains (`roost drains`): where an app's lines are also sent, and what
each controller delivered and dropped for each (controller/logdrains.py);
an app's own retention of the built-in log store, in lines and days, in
place of the one cap every app had. New tables only: older controllers
neither read nor write them (and keep trimming to the platform's cap).
"""

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "log_drains",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "app_id", sa.Integer(), sa.ForeignKey("apps.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("token", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.UniqueConstraint("app_id", "url"),
    )
    op.create_table(
        "log_drain_status",
        sa.Column(
            "drain_id",
            sa.Integer(),
            sa.ForeignKey("log_drains.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("holder", sa.String(128), primary_key=True),
        sa.Column("delivered", sa.BigInteger(), nullable=False),
        sa.Column("dropped", sa.BigInteger(), nullable=False),
        sa.Column("failing", sa.Boolean(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.Column("last_ok_at", sa.Float(), nullable=True),
        sa.Column("last_error_at", sa.Float(), nullable=True),
        sa.Column("updated_at", sa.Float(), nullable=False),
    )
    op.create_table(
        "log_retention",
        sa.Column(
            "app_id",
            sa.Integer(),
            sa.ForeignKey("apps.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("lines", sa.Integer(), nullable=True),
        sa.Column("days", sa.Float(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("log_retention")
    op.drop_table("log_drain_status")
    op.drop_table("log_drains")
