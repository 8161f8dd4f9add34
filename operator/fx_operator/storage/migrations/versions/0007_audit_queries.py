"""A readable audit: which secret versions each record names, and indexes for its filters.

``audit_names`` has one row per secret version an audit record names (its ``entries`` JSON:
name, scope, version and, from now on, ``dataKeyId``, the data key that wrapped the value),
with the owner the version belongs to (package scope: the record's project and package;
project scope: its project; platform: neither). ``fxctl audit consumers`` reads it by version
or by data key, newest record first, without opening a record's JSON.

The rows are derived from ``entries`` by a trigger on each INSERT into ``audit``, on both
stores: an index kept by the database, so every writer (a resolution's single pipelined
statement, a write's record, a COPY) keeps it exact, and the stores cannot disagree. Records
that name no secret (a run key's delivery, a rotation) skip it (the trigger's WHEN).

Indexes on ``audit`` for ``fxctl audit``'s filters, each ending in the id that pages go by:
project, action, actor; and the time, for --since/--until.

Cost on every resolution, the whole write-side price of the command (bench/bench_audit.py, a
durable audit INSERT of 5 names at a million records, load average 6 on 2 cores): 1.16x the
INSERT before 0007 at p50 (the trigger and its 5 rows; the 4 indexes on audit did not show).

Existing records are indexed by this migration (their entries carry no data key id).

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

_PG_ROWS = """
SELECT {audit}.id, e.name, e.scope,
       CASE e.scope WHEN 'platform' THEN '' ELSE {audit}.project END,
       CASE e.scope WHEN 'package' THEN {audit}.package ELSE '' END,
       e.version, e."dataKeyId"
FROM {source}jsonb_to_recordset({audit}.entries::jsonb)
     AS e(name text, scope text, version int, "dataKeyId" text)
WHERE e.name IS NOT NULL AND e.scope IN ('package', 'project', 'platform')
  AND e.version IS NOT NULL
"""

_SQLITE_ROWS = """
SELECT {audit}.id, json_extract(e.value, '$.name'), json_extract(e.value, '$.scope'),
       CASE json_extract(e.value, '$.scope') WHEN 'platform' THEN '' ELSE {audit}.project END,
       CASE json_extract(e.value, '$.scope') WHEN 'package' THEN {audit}.package ELSE '' END,
       json_extract(e.value, '$.version'), json_extract(e.value, '$.dataKeyId')
FROM {source}json_each({audit}.entries) AS e
WHERE json_type(e.value) = 'object' AND json_type(e.value, '$.name') = 'text'
  AND json_extract(e.value, '$.scope') IN ('package', 'project', 'platform')
  AND json_type(e.value, '$.version') = 'integer'
"""

_INSERT = "INSERT INTO audit_names (audit_id, name, scope, project, package, version, data_key_id)"
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
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"{_INSERT} {_PG_ROWS.format(audit='audit', source='audit, ')}")
        op.execute(f"""
            CREATE FUNCTION audit_names_fill() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              {_INSERT} {_PG_ROWS.format(audit='NEW', source='')};
              RETURN NULL;
            END $$""")
        op.execute(f"""
            CREATE TRIGGER audit_names_fill AFTER INSERT ON audit FOR EACH ROW
            WHEN ({_NAMES_SOMETHING}) EXECUTE FUNCTION audit_names_fill()""")
    else:
        op.execute(f"{_INSERT} {_SQLITE_ROWS.format(audit='audit', source='audit, ')}")
        op.execute(f"""
            CREATE TRIGGER audit_names_fill AFTER INSERT ON audit FOR EACH ROW
            WHEN {_NAMES_SOMETHING}
            BEGIN
              {_INSERT} {_SQLITE_ROWS.format(audit='NEW', source='')};
            END""")


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS audit_names_fill" +
               (" ON audit" if op.get_bind().dialect.name == "postgresql" else ""))
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS audit_names_fill()")
    for index in ("audit_by_time", "audit_by_actor", "audit_by_action", "audit_by_project"):
        op.drop_index(index, table_name="audit")
    op.drop_table("audit_names")
