"""Package state encrypted at rest: a ciphertext column, the plaintext kept only until sealed.

``context.state`` values were stored as plaintext JSON in ``package_state.value``, readable in a
database dump. From here on each value is sealed under its package's data key (AES-256-GCM,
associated data binding kind "state", scope, project, package and key: ``crypto.encrypt_state``)
into ``blob``, with ``data_key_id`` and the plaintext's size (``value_bytes``, for the limits).

A migration has no master key, so it cannot encrypt the existing rows: their plaintext moves to
``legacy_value`` (nullable), and the state service seals every such row the first time it opens
the state (``PackageStateService``), then clears ``legacy_value``. Downgrading is refused while
any encrypted row exists: the plaintext cannot be rebuilt without the master key.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("package_state") as batch:
        batch.alter_column("value", new_column_name="legacy_value", existing_type=sa.Text,
                           nullable=True, existing_nullable=False,
                           comment="plaintext JSON from before 0005; NULL once sealed")
        batch.add_column(sa.Column("blob", sa.LargeBinary, nullable=True,
                                   comment="AES-256-GCM under the package's data key"))
        batch.add_column(sa.Column("data_key_id", sa.String(32), nullable=True))
        batch.add_column(sa.Column("value_bytes", sa.Integer, nullable=True,
                                   comment="size of the plaintext JSON, for the limits"))


def downgrade() -> None:
    sealed = op.get_bind().execute(
        sa.text("SELECT count(*) FROM package_state WHERE blob IS NOT NULL")).scalar()
    if sealed:
        raise RuntimeError(f"{sealed} package state row(s) are encrypted; a schema before 0005 "
                           "cannot hold them (their plaintext needs the master key)")
    with op.batch_alter_table("package_state") as batch:
        batch.drop_column("value_bytes")
        batch.drop_column("data_key_id")
        batch.drop_column("blob")
        batch.alter_column("legacy_value", new_column_name="value", existing_type=sa.Text,
                           nullable=False, existing_nullable=True)
