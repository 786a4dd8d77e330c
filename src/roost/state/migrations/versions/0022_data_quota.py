"""data_quota

Revision ID: 0022
Revises: 0021

Reserved in the chain so work on several issues can add tables in
parallel; this step changes nothing until its schema is written here.
"""

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
