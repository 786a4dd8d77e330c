"""restore_holds

Revision ID: 0025
Revises: 0024

An app suspended for its own restore, recorded as such (issue 16): the
restore's id and since when. The lease holder resumes it once backupd no
longer runs that restore (roost.controller.restorehold), so a controller
that died mid-restore leaves no app in maintenance. A user who suspends
or resumes the app meanwhile marks the row (`by_user`): that restore's end
then leaves the app as the user set it. Expand only: a new table,
which release 0.2.0's controllers never read.
"""

import sqlalchemy as sa
from alembic import op

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "restore_holds",
        sa.Column("app_id", sa.Integer(), primary_key=True),
        sa.Column("app", sa.String(255), nullable=False),
        sa.Column("restore_id", sa.String(64), nullable=False),
        sa.Column("since", sa.Float(), nullable=False),
        sa.Column("by_user", sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    op.drop_table("restore_holds")
