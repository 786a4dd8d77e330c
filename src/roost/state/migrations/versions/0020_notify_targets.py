"""notify_targets

Revision ID: 0020
Revises: 0019

Reserved in the chain so work on several issues can add tables in
parallel; this step changes nothing until its schema is written here.
"""

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
