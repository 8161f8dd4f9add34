"""The PostgreSQL test fixtures start a real server and hand out separate databases."""

from __future__ import annotations

import psycopg
import pytest
import sqlalchemy as sa
from support.postgres import PostgresServer, sqlalchemy_url

pytestmark = pytest.mark.postgres


def test_server_is_real_postgresql(postgres_dsn: str) -> None:
    with psycopg.connect(postgres_dsn) as conn:
        row = conn.execute("select version()").fetchone()
    assert row is not None
    assert "PostgreSQL" in row[0]


def test_default_database_dsn(postgres_server: PostgresServer) -> None:
    assert postgres_server.dsn.startswith("postgresql://postgres@/fx?host=/tmp/")
    with psycopg.connect(postgres_server.dsn) as conn:
        row = conn.execute("select current_database()").fetchone()
    assert row == ("fx",)


def test_each_test_gets_its_own_database(postgres_server: PostgresServer) -> None:
    a = postgres_server.create_database("t_fixture_a")
    b = postgres_server.create_database("t_fixture_b")
    try:
        assert a != b
        with psycopg.connect(a) as conn:
            conn.execute("create table only_in_a (x int)")
        with psycopg.connect(b) as conn:
            assert conn.execute("select current_database()").fetchone() == ("t_fixture_b",)
            row = conn.execute("select to_regclass('only_in_a')").fetchone()
            assert row == (None,)
    finally:
        postgres_server.drop_database("t_fixture_a")
        postgres_server.drop_database("t_fixture_b")


def test_postgres_dsn_is_fresh_and_empty(postgres_dsn: str) -> None:
    with psycopg.connect(postgres_dsn) as conn:
        row = conn.execute(
            "select count(*) from information_schema.tables where table_schema = 'public'"
        ).fetchone()
    assert row == (0,)


def test_dump_contains_table_and_row(postgres_server: PostgresServer, postgres_dsn: str) -> None:
    with psycopg.connect(postgres_dsn) as conn:
        conn.execute("create table dump_probe (id int primary key, note text)")
        conn.execute("insert into dump_probe values (1, 'visible-in-dump-7f3a')")
    dbname = postgres_dsn.split("?", 1)[0].rsplit("/", 1)[1]
    dump = postgres_server.dump(dbname)
    assert b"CREATE TABLE public.dump_probe" in dump
    assert b"visible-in-dump-7f3a" in dump
    assert b"not-inserted-canary" not in dump


def test_sqlalchemy_url(postgres_dsn: str) -> None:
    engine = sa.create_engine(sqlalchemy_url(postgres_dsn))
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("select 1")).scalar() == 1
    finally:
        engine.dispose()
