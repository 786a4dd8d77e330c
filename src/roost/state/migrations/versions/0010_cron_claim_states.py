"""cron claim states and fencing tokens

Revision ID: 0010
Revises: 0009

A claim now records its owner's fencing token and its state (queued ->
claimed -> started(runner, session) -> finished(status)), so the next lease
holder can take over a claim that never started and collect a run that was
going on when its controller died. Claims made before this change carry no
such record: they are taken as finished ("unknown" when no outcome was
written), never run again.
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("cron_claims") as batch:
        batch.add_column(sa.Column("fence", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(
            sa.Column("state", sa.String(length=16), nullable=False, server_default="finished")
        )
        batch.add_column(
            sa.Column("runner", sa.String(length=128), nullable=False, server_default="")
        )
        batch.add_column(
            sa.Column("session", sa.String(length=64), nullable=False, server_default="")
        )
        batch.add_column(sa.Column("started_at", sa.Float(), nullable=True))
        batch.add_column(sa.Column("finished_at", sa.Float(), nullable=True))
        batch.add_column(sa.Column("exit_code", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("out_seq", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("out_tail", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("out_lines", sa.Integer(), nullable=False, server_default="0"))
    op.execute("UPDATE cron_claims SET status = 'unknown' WHERE status = 'claimed'")
    op.create_index("ix_cron_claims_state", "cron_claims", ["state"])


def downgrade() -> None:
    op.drop_index("ix_cron_claims_state", table_name="cron_claims")
    op.execute(
        "UPDATE cron_claims SET status = 'claimed' WHERE status NOT IN ('succeeded', 'failed')"
    )
    with op.batch_alter_table("cron_claims") as batch:
        for name in (
            "out_lines", "out_tail", "out_seq", "exit_code", "finished_at", "started_at",
            "session", "runner", "state", "fence",
        ):  # fmt: skip
            batch.drop_column(name)
