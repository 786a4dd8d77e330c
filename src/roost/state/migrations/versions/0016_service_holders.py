"""service_bindings.host, service_bindings.standby_host

Revision ID: 0016
Revises: 0015

Which servicehost holds each binding's data (its host id, the name it
reports itself by), and room for the standby of the pairs to come. Rows
written before keep "": the controller does not guess their holder (with
several servicehosts any of them could hold it) but asks every servicehost
which apps it holds and records the one that does (controller.services).
Expand-only: two columns with server defaults, which older code ignores.
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("service_bindings") as batch:
        batch.add_column(sa.Column("host", sa.String(255), nullable=False, server_default=""))
        batch.add_column(
            sa.Column("standby_host", sa.String(255), nullable=False, server_default="")
        )


def downgrade() -> None:
    with op.batch_alter_table("service_bindings") as batch:
        batch.drop_column("standby_host")
        batch.drop_column("host")
