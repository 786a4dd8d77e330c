"""acme_certs

Revision ID: 0018
Revises: 0017

Certificates by ACME (controller/acme*.py): each managed domain's order
state, the HTTP-01 answers the routers publish, and the platform's ACME
account (its key sealed). New tables only: older controllers neither read
nor write them.
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "acme_orders",
        sa.Column("hostname", sa.String(255), primary_key=True),
        sa.Column(
            "app_id", sa.Integer(), sa.ForeignKey("apps.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False, server_default=""),
        sa.Column("detail", sa.Text(), nullable=False, server_default=""),
        sa.Column("failures", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
    )
    op.create_table(
        "acme_challenges",
        sa.Column("token", sa.String(255), primary_key=True),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column(
            "app_id", sa.Integer(), sa.ForeignKey("apps.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("key_authorization", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
    )
    op.create_table(
        "acme_accounts",
        sa.Column("directory", sa.String(512), primary_key=True),
        sa.Column("key_sealed", sa.Text(), nullable=False),
        sa.Column("uri", sa.Text(), nullable=False, server_default=""),
        sa.Column("created_at", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("acme_accounts")
    op.drop_table("acme_challenges")
    op.drop_table("acme_orders")
