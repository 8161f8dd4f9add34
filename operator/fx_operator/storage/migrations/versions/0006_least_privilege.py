"""Least privilege: what a local run asked for in vain, and finding who received a version.

* ``run_results.unmasked_names`` and ``run_results.missing_names``: JSON lists of names (never
  values) — secrets too short to mask, and names the script asked for that the run did not
  receive. Older rows read as empty lists.
* ``audit_resolved_entries`` (PostgreSQL): a GIN index (``jsonb_path_ops``) over the entries of
  resolution records, for finding the runs that received a name's version with ``@>`` (the
  query of the coming ``fxctl audit consumers``) without a scan of every entry.
  A GIN index's pending list keeps an insert's cost low. SQLite (the embedded store, one user's
  runs) scans with ``json_each``, narrowed by ``audit_by_action_at``.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08
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
    op.create_index("audit_by_action_at", "audit", ["action", "at"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE INDEX audit_resolved_entries ON audit USING gin "
                   "((entries::jsonb) jsonb_path_ops) WHERE action = 'resolve'")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX audit_resolved_entries")
    op.drop_index("audit_by_action_at", "audit")
    with op.batch_alter_table("run_results") as batch:
        batch.drop_column("missing_names")
        batch.drop_column("unmasked_names")
