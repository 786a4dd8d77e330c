"""service_pairs, app_pairs

Revision ID: 0021
Revises: 0020

Servicehosts in pairs (issue 16): each pair's PostgreSQL is a Patroni
cluster over its two servicehosts; `app_pairs` says which pair holds an
app's services. New tables only: older controllers neither read nor
write them (they go on placing on single servicehosts).
"""

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "service_pairs",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("first_host", sa.String(255), nullable=False),
        sa.Column("second_host", sa.String(255), nullable=False),
        sa.Column("first_address", sa.String(255), nullable=False),
        sa.Column("second_address", sa.String(255), nullable=False),
        sa.Column("pg_port", sa.Integer(), nullable=False),
        sa.Column("rest_port", sa.Integer(), nullable=False),
        sa.Column("proxy_port", sa.Integer(), nullable=False, unique=True),
        sa.Column("created_at", sa.Float(), nullable=False),
    )
    op.create_table(
        "app_pairs",
        sa.Column(
            "app_id",
            sa.Integer(),
            sa.ForeignKey("apps.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("pair", sa.String(64), sa.ForeignKey("service_pairs.name"), nullable=False),
        sa.Column("placed_at", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("app_pairs")
    op.drop_table("service_pairs")
