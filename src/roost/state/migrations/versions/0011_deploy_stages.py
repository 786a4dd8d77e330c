"""deploy stages

Revision ID: 0011
Revises: 0010

A build's status is now its deploy's stage (roost.controller.deployflow):
building, provisioning, copying, releasing, rolling-out, then live, failed or
rolled-back. Builds older versions left "deploying" are rolling out; those
they marked "succeeded" are live. Failed builds stay failed: which of them
an older release outlived was never recorded.
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

# (older status, stage) pairs; downgrade maps every stage back to the nearest
# status an older version reads (it knows building, deploying, succeeded, failed).
RENAMES = (("deploying", "rolling-out"), ("succeeded", "live"))
OLDER = {
    "provisioning": "building",
    "copying": "building",
    "releasing": "building",
    "rolling-out": "deploying",
    "live": "succeeded",
    "rolled-back": "failed",
}


def upgrade() -> None:
    for old, new in RENAMES:
        op.execute(f"UPDATE builds SET status = '{new}' WHERE status = '{old}'")


def downgrade() -> None:
    for new, old in OLDER.items():
        op.execute(f"UPDATE builds SET status = '{old}' WHERE status = '{new}'")
