"""build queue

Revision ID: 0014
Revises: 0013

Deploys of one app run one after another: a deploy arriving while another
has not ended waits in the new `queued` stage, its upload kept in
`build_uploads` until it starts (or is cancelled), so any controller can
start it. `builds.status` gets an index: the lease holder looks for queued
deploys every half second.
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "build_uploads",
        sa.Column(
            "build_id",
            sa.String(32),
            sa.ForeignKey("builds.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("archive", sa.LargeBinary(), nullable=False),
    )
    op.create_index("ix_builds_status", "builds", ["status"])


def downgrade() -> None:
    # The older code knows neither stage: a queued deploy cannot wait there
    # (it is failed), and a cancelled one reads as failed (its error says why).
    op.execute(
        "UPDATE builds SET status = 'failed', error = 'cancelled by a downgrade' "
        "WHERE status = 'queued'"
    )
    op.execute("UPDATE builds SET status = 'failed' WHERE status = 'cancelled'")
    op.drop_index("ix_builds_status", table_name="builds")
    op.drop_table("build_uploads")
