"""The audit's version-level index is found by its reader: writers no longer queue anything.

Migration 0007's trigger queued the id of every audit record that names a secret. On the write
path that is where a resolution's extra cost went (bench_store's resolve ratio 3.0-3.1x before
0007, 3.2-3.3x after). Measured on one resolution-sized INSERT per transaction, interleaved,
PostgreSQL 15: the four indexes of 0007 +7 µs; the row trigger's machinery +3 µs, its WHEN
(LIKE on the compressed entries) +6 µs, calling the PL/pgSQL function +4 µs, the queue's row
+7 µs; a statement-level trigger over a transition table +17 µs; the writer queueing the row
itself in the same statement (a CTE) +10 µs. Not queueing at all: +0 µs. On bench_store's
100-name resolution, the server's CPU per resolution (its backend's run time, the three
schemas in one server, interleaved, 5 runs): +36 to +66 µs at 0007 over 0006, +1 to +15 µs
here (the indexes).

So the trigger goes, and readers find what is new themselves (``storage.audit_log``): each pass
indexes the records above a mark, ``audit_names_progress.indexed_through``, that have no rows
yet, and moves the mark up only to ids whose writers have all finished. On PostgreSQL ids are
taken before their transaction commits, so a record can become visible after records with
higher ids; the pass therefore remembers the highest id it saw (``seen_through``) and the
transactions writing to ``audit`` just after (``writers_then``), and the next pass moves the
mark to ``seen_through`` only once none of those is still running.

The queue stays: what the trigger and migration 0007 queued is still derived by the next reader.
The mark starts at the newest record, every record up to it being queued already: dropping the
trigger waits for the writers in flight and holds new ones off until this commits.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_NAMES_SOMETHING = """entries LIKE '%"name"%'"""


def _postgres() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS audit_names_queue" + (" ON audit" if _postgres() else ""))
    if _postgres():
        op.execute("DROP FUNCTION IF EXISTS audit_names_queue()")
    op.create_table(
        "audit_names_progress",
        sa.Column("indexed_through", sa.BigInteger, nullable=False,
                  comment="every record up to this id is indexed (or queued)"),
        sa.Column("seen_through", sa.BigInteger, nullable=False,
                  comment="the newest record the last pass saw"),
        sa.Column("writers_then", sa.Text, nullable=False,
                  comment="PostgreSQL: the transactions writing to audit after that pass"),
    )
    op.execute("INSERT INTO audit_names_progress (indexed_through, seen_through, writers_then) "
               "SELECT COALESCE(MAX(id), 0), COALESCE(MAX(id), 0), '' FROM audit")


def downgrade() -> None:
    """Back to 0007's trigger; the records above the mark that no pass indexed yet are queued
    (after the trigger exists: creating it waits for the writers in flight)."""
    queue = "INSERT INTO audit_names_pending (audit_id)"
    if _postgres():
        op.execute(f"""
            CREATE FUNCTION audit_names_queue() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              {queue} VALUES (NEW.id);
              RETURN NULL;
            END $$""")
        op.execute(f"""
            CREATE TRIGGER audit_names_queue AFTER INSERT ON audit FOR EACH ROW
            WHEN (NEW.{_NAMES_SOMETHING}) EXECUTE FUNCTION audit_names_queue()""")
    else:
        op.execute(f"""
            CREATE TRIGGER audit_names_queue AFTER INSERT ON audit FOR EACH ROW
            WHEN NEW.{_NAMES_SOMETHING}
            BEGIN
              {queue} VALUES (NEW.id);
            END""")
    op.execute(f"""
        {queue} SELECT a.id FROM audit a
        WHERE a.id > (SELECT indexed_through FROM audit_names_progress) AND a.{_NAMES_SOMETHING}
          AND NOT EXISTS (SELECT 1 FROM audit_names n WHERE n.audit_id = a.id)
          AND NOT EXISTS (SELECT 1 FROM audit_names_pending p WHERE p.audit_id = a.id)""")
    op.drop_table("audit_names_progress")
