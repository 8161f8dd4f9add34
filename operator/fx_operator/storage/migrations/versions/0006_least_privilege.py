"""Least privilege: what a local run asked for in vain.

``run_results.unmasked_names`` and ``run_results.missing_names``: JSON lists of names (never
values) — secrets too short to mask, and names the script asked for that the run did not
receive. Older rows read as empty lists.

(The index ``fxctl audit consumers`` will need comes with that command, with its cost on every
resolution measured: not before.)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("run_results") as batch:
        batch.add_column(sa.Column("unmasked_names", sa.Text, nullable=False,
                                   server_default="[]"))
        batch.add_column(sa.Column("missing_names", sa.Text, nullable=False,
                                   server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("run_results") as batch:
        batch.drop_column("missing_names")
        batch.drop_column("unmasked_names")
