"""Run results and per-package state.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "run_results",
        sa.Column("run_id", sa.String(128), primary_key=True),
        sa.Column("project", sa.String(63), nullable=False),
        sa.Column("package", sa.String(63), nullable=False),
        sa.Column("actor", sa.String(256), nullable=False),
        sa.Column("exit_code", sa.Integer, nullable=False),
        sa.Column("signal", sa.String(16), nullable=True),
        sa.Column("timed_out", sa.Boolean, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("duration_s", sa.Float, nullable=False),
        sa.Column("output_tail", sa.Text, nullable=False, comment="masked"),
        sa.Column("output_truncated", sa.Boolean, nullable=False),
        sa.Column("manifest", sa.Text, nullable=False,
                  comment="JSON {name: {scope, version, key_id}}; never a value"),
    )
    op.create_index("run_results_by_package", "run_results", ["project", "package", "started_at"])
    op.create_table(
        "package_state",
        sa.Column("project", sa.String(63), nullable=False),
        sa.Column("package", sa.String(63), nullable=False),
        sa.Column("key", sa.String(256), nullable=False),
        sa.Column("value", sa.Text, nullable=False, comment="JSON"),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("run_id", sa.String(128), nullable=True),
        sa.PrimaryKeyConstraint("project", "package", "key"),
    )


def downgrade() -> None:
    op.drop_table("package_state")
    op.drop_index("run_results_by_package", "run_results")
    op.drop_table("run_results")
