"""service_pairs

Revision ID: 0021
Revises: 0020

Reserved in the chain so work on several issues can add tables in
parallel; this step changes nothing until its schema is written here.
"""

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
