"""A readable audit: which secret versions each record names, and indexes for its filters.

``audit_names`` has one row per secret version an audit record names (its ``entries`` JSON:
name, scope, version and, from now on, ``dataKeyId``, the data key that wrapped the value),
with the owner the version belongs to (package scope: the record's project and package;
project scope: its project; platform: neither). ``fxctl audit consumers`` reads it by version
or by data key, newest record first, without opening a record's JSON.

Its rows are derived from ``entries`` when the audit is read, not when it is written
(``storage.audit_log.index_pending``, before each query that needs them): a trigger on each
INSERT into ``audit``, on both stores, only queues the record's id in ``audit_names_pending``
(one row, one key), so every writer (a resolution's single pipelined statement, a write's record,
a COPY) is accounted for and the stores cannot disagree. Expanding a 100-name resolution into its
rows in the trigger cost ~900 µs on every run (bench_store: 710 -> 1,650 µs at p50); queued, the
run pays ~30 µs and the reader pays the rest once. Records that name no secret (a run key's
delivery, a rotation) skip the queue (the trigger's WHEN).

Indexes on ``audit`` for ``fxctl audit``'s filters, each ending in the id that pages go by:
project, action, actor; and the time, for --since/--until.

Existing records are queued by this migration (their entries carry no data key id).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_QUEUE = "INSERT INTO audit_names_pending (audit_id)"
_NAMES_SOMETHING = """NEW.entries LIKE '%"name"%'"""


def upgrade() -> None:
    op.create_table(
        "audit_names",
        sa.Column("audit_id", sa.BigInteger().with_variant(sa.Integer, "sqlite"),
                  nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("project", sa.String(63), nullable=False),
        sa.Column("package", sa.String(63), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("data_key_id", sa.String(32), nullable=True,
                  comment="the data key that wrapped the value; NULL in older records"),
    )
    op.create_index("audit_names_by_version", "audit_names",
                    ["name", "scope", "project", "package", "version", "audit_id"])
    op.create_index("audit_names_by_data_key", "audit_names", ["data_key_id", "audit_id", "name"],
                    postgresql_where=sa.text("data_key_id IS NOT NULL"),
                    sqlite_where=sa.text("data_key_id IS NOT NULL"))
    op.create_index("audit_names_by_record", "audit_names", ["audit_id"])
    op.create_index("audit_by_project", "audit", ["project", "id"])
    op.create_index("audit_by_action", "audit", ["action", "id"])
    op.create_index("audit_by_actor", "audit", ["actor", "id"])
    op.create_index("audit_by_time", "audit", ["at"])
    op.create_table(
        "audit_names_pending",
        sa.Column("audit_id", sa.BigInteger().with_variant(sa.Integer, "sqlite"),
                  primary_key=True, autoincrement=False),
    )
    op.execute(f"""{_QUEUE} SELECT id FROM audit WHERE entries LIKE '%"name"%'""")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"""
            CREATE FUNCTION audit_names_queue() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              {_QUEUE} VALUES (NEW.id);
              RETURN NULL;
            END $$""")
        op.execute(f"""
            CREATE TRIGGER audit_names_queue AFTER INSERT ON audit FOR EACH ROW
            WHEN ({_NAMES_SOMETHING}) EXECUTE FUNCTION audit_names_queue()""")
    else:
        op.execute(f"""
            CREATE TRIGGER audit_names_queue AFTER INSERT ON audit FOR EACH ROW
            WHEN {_NAMES_SOMETHING}
            BEGIN
              {_QUEUE} VALUES (NEW.id);
            END""")


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS audit_names_queue" +
               (" ON audit" if op.get_bind().dialect.name == "postgresql" else ""))
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS audit_names_queue()")
    op.drop_table("audit_names_pending")
    for index in ("audit_by_time", "audit_by_actor", "audit_by_action", "audit_by_project"):
        op.drop_index(index, table_name="audit")
    op.drop_table("audit_names")
