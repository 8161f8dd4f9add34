"""One-time run keys kept for the broker until the run's pod claims its own.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "run_keys",
        sa.Column("run_id", sa.String(128), primary_key=True),
        sa.Column("namespace", sa.String(63), nullable=False),
        sa.Column("execution", sa.String(253), nullable=False),
        sa.Column("job_name", sa.String(63), nullable=False),
        sa.Column("package", sa.String(63), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary, nullable=True,
                  comment="under the master key; erased once delivered or finished"),
        sa.Column("master_key_id", sa.String(16), nullable=False),
        sa.Column("allow_platform_write", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delivered_to_pod", sa.String(64), nullable=True, comment="the pod's uid"),
    )
    op.create_index("run_keys_by_created_at", "run_keys", ["created_at"])


def downgrade() -> None:
    op.drop_index("run_keys_by_created_at", "run_keys")
    op.drop_table("run_keys")
