"""log_drains

Revision ID: 0019
Revises: 0018

Reserved in the chain so work on several issues can add tables in
parallel; this step changes nothing until its schema is written here.
"""

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
