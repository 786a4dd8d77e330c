"""acme_certs

Revision ID: 0018
Revises: 0017

Reserved in the chain so work on several issues can add tables in
parallel; this step changes nothing until its schema is written here.
"""

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
