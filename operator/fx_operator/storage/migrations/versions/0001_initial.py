"""Initial schema: data keys, secret versions, audit, store metadata.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

OWNER = ("scope", "project", "package")


def _owner_columns() -> list[sa.Column[str]]:
    return [
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("project", sa.String(63), nullable=False),
        sa.Column("package", sa.String(63), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "store_meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.create_table(
        "data_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        *_owner_columns(),
        sa.Column("wrapped", sa.LargeBinary, nullable=False),
        sa.Column("master_key_id", sa.String(16), nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("data_keys_one_active_per_owner", "data_keys", list(OWNER), unique=True,
                    postgresql_where=sa.text("active"), sqlite_where=sa.text("active"))
    op.create_table(
        "secret_versions",
        *_owner_columns(),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("blob", sa.LargeBinary, nullable=True, comment="NULL marks a tombstone"),
        sa.Column("data_key_id", sa.String(32), sa.ForeignKey("data_keys.id"), nullable=True),
        sa.Column("is_current", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(256), nullable=False),
        sa.PrimaryKeyConstraint(*OWNER, "name", "version"),
    )
    op.create_index("secret_versions_one_current", "secret_versions", [*OWNER, "name"],
                    unique=True, postgresql_where=sa.text("is_current"),
                    sqlite_where=sa.text("is_current"))
    op.create_index("secret_versions_current_by_name", "secret_versions", ["name"],
                    postgresql_where=sa.text("is_current"), sqlite_where=sa.text("is_current"))
    op.create_table(
        "audit",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(256), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("scope", sa.String(16), nullable=True),
        sa.Column("project", sa.String(63), nullable=False),
        sa.Column("package", sa.String(63), nullable=False),
        sa.Column("run_id", sa.String(128), nullable=True),
        sa.Column("entries", sa.Text, nullable=False,
                  comment="JSON list of {name, scope, version}; never a value"),
    )
    op.create_index("audit_by_run", "audit", ["run_id"])


def downgrade() -> None:
    op.drop_table("audit")
    op.drop_table("secret_versions")
    op.drop_table("data_keys")
    op.drop_table("store_meta")
