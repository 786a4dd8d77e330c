"""notify_targets

Revision ID: 0020
Revises: 0019

Alerts (`roost notify`, controller/notify.py): where they go
(notify_targets), what was raised (notify_events, stored before any
delivery) and each delivery's attempts (notify_deliveries). New tables
only: older controllers neither read nor write them.
"""

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notify_targets",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "app_id",
            sa.Integer(),
            sa.ForeignKey("apps.id", ondelete="CASCADE"),
            nullable=True,
        ),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("sealed", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("trusted", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.create_table(
        "notify_events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("ts", sa.Float(), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("app", sa.String(64), nullable=False, server_default=""),
        sa.Column("message", sa.Text(), nullable=False, server_default=""),
        sa.Column("fields", sa.Text(), nullable=False, server_default="{}"),
    )
    op.create_table(
        "notify_deliveries",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "event_id",
            sa.Integer(),
            sa.ForeignKey("notify_events.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column(
            "target_id",
            sa.Integer(),
            sa.ForeignKey("notify_targets.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("state", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_at", sa.Float(), nullable=False),
        sa.Column("last_at", sa.Float(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=False, server_default=""),
        sa.UniqueConstraint("event_id", "target_id"),
    )
    op.create_index("ix_notify_deliveries_due", "notify_deliveries", ["state", "next_at"])
    op.create_index("ix_notify_deliveries_target", "notify_deliveries", ["target_id"])


def downgrade() -> None:
    op.drop_table("notify_deliveries")
    op.drop_table("notify_events")
    op.drop_table("notify_targets")
